"""Grounding answers in documents: loading, chunking, embedding, the index, and retrieval."""
