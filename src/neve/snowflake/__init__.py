"""Snowflake: the batch protocol its service functions speak (relay.py) and the SQL that
creates them (sql.py)."""
