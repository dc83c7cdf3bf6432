"""The model as SQL functions in query engines: `neve.sql.register(con)` for DuckDB."""

from neve.sql.duckdb import register

__all__ = ["register"]
