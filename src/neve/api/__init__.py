"""The HTTP API: OpenAI-compatible routes and the hub's own."""
