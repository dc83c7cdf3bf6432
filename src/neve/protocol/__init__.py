"""Wire types both layers speak: OpenAI's (openai.py) and neve's own routes' (neve.py)."""
