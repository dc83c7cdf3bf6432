"""The hub's state: conversations, feedback, the request log, users, groups and API keys,
in SQLite (the default) or PostgreSQL."""
