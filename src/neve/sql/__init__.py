"""The model as SQL functions in query engines."""
