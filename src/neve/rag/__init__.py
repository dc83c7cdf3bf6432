"""Grounding answers in documents: embedding (and, later, loaders, chunking, the index)."""
