"""Running `neve deploy spcs` steps against an account, through snowflake-connector-python
and the user's own connection."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from neve.errors import ConfigError, NeveError
from neve.snowflake.settings import SpcsSettings
from neve.snowflake.spcs import (
    Lookup,
    NodesWait,
    Service,
    Statement,
    Step,
    Wait,
    exists_sql,
)

# The connector's own environment names, read where no connection name is given.
_ENV = {
    "SNOWFLAKE_ACCOUNT": "account",
    "SNOWFLAKE_USER": "user",
    "SNOWFLAKE_PASSWORD": "password",
    "SNOWFLAKE_AUTHENTICATOR": "authenticator",
    "SNOWFLAKE_TOKEN": "token",
    "SNOWFLAKE_PRIVATE_KEY_FILE": "private_key_file",
    "SNOWFLAKE_HOST": "host",
    "SNOWFLAKE_PORT": "port",
    "SNOWFLAKE_PROTOCOL": "protocol",
}


class DeployError(NeveError):
    """A step failed; the message names the statement and Snowflake's answer."""

    code = "deploy_failed"


# Inside Snowpark Container Services: the service's own OAuth token, refreshed by
# Snowflake in place (read anew for each connection), and where to use it.
SPCS_TOKEN = Path("/snowflake/session/token")


def in_spcs() -> bool:
    return SPCS_TOKEN.is_file()


def configured(spcs: SpcsSettings, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a connection is set up; without one, actions default to --dry-run."""
    environ = os.environ if environ is None else environ
    home = Path(environ.get("SNOWFLAKE_HOME") or Path.home() / ".snowflake")
    return bool(
        spcs.connection
        or environ.get("SNOWFLAKE_ACCOUNT")
        or environ.get("SNOWFLAKE_DEFAULT_CONNECTION_NAME")
        or (home / "connections.toml").is_file()
    )


def connect(
    spcs: SpcsSettings,
    environ: Mapping[str, str] | None = None,
    *,
    timeout: float = 60,
    in_schema: bool = False,
) -> Any:
    """A connection (`in_schema`: its session in spcs.database and spcs.schema), or
    DeployError after `timeout` seconds of trying to log in."""
    environ = os.environ if environ is None else environ
    try:
        import snowflake.connector
    except ImportError:
        raise ConfigError(
            "talking to Snowflake needs the connector: pip install 'neve[snowflake]'"
        ) from None
    params: dict[str, Any] = {
        "login_timeout": timeout,
        "enable_server_session_keep_alive_auto_detection": False,  # no async queries
    }
    if in_schema:
        params |= {"database": spcs.database, "schema": spcs.schema_name}
    if spcs.connection:
        params["connection_name"] = spcs.connection
    elif in_spcs() and not environ.get("SNOWFLAKE_USER"):
        params |= {"host": environ.get("SNOWFLAKE_HOST"),
                   "account": environ.get("SNOWFLAKE_ACCOUNT"), "authenticator": "oauth",
                   "token": SPCS_TOKEN.read_text(), "warehouse": spcs.warehouse}  # fmt: skip
    elif environ.get("SNOWFLAKE_ACCOUNT"):
        params |= {key: environ[name] for name, key in _ENV.items() if environ.get(name)}
    try:
        return snowflake.connector.connect(**params)
    except snowflake.connector.Error as exc:
        raise DeployError(f"cannot connect to Snowflake: {exc.msg or exc}") from None


Report = Callable[[str, list[dict[str, Any]] | None], None]


def run(connection: Any, steps: list[Step], report: Report) -> None:
    """Run `steps` in order; `report(what, rows)` hears each, with the rows of those the
    user wants to see. Raises DeployError at the first that fails."""
    found: dict[str, str] = {}  # what Lookup steps read, for the SQL after them

    def filled(sql: str) -> str:
        for key, value in found.items():
            sql = sql.replace(f"${{{key}}}", value)
        return sql

    for step in steps:
        if isinstance(step, Service):
            if _rows(connection, step.exists):
                for sql in step.alter:
                    _rows(connection, filled(sql))
                report(f"updated {step.name}", None)
            else:
                _rows(connection, filled(step.create))
                report(f"created {step.name}", None)
        elif isinstance(step, Wait):
            _wait(connection, step, report)
        elif isinstance(step, Lookup):
            rows = _rows(connection, step.sql)
            found[step.key] = str(next(iter(rows[0].values()))) if rows else ""
            report(f"{step.key} = {found[step.key]}", None)
        elif isinstance(step, NodesWait):
            _nodes_wait(connection, step, report)
        else:
            _statement(connection, step, report)


def _nodes_wait(connection: Any, step: NodesWait, report: Report) -> None:
    """Until the hub sees `step.nodes` Ray worker nodes alive (READY services are not yet
    a cluster: a worker joins the head after it starts)."""
    deadline = time.monotonic() + step.timeout
    last = None
    while True:
        try:
            rows = _rows(connection, step.sql)
            nodes = json.loads(next(iter(rows[0].values()))) if rows else []
        except DeployError:  # the hub's relay not answering yet
            nodes = []
        workers = [n for n in nodes if n.get("alive") and not n.get("head")]
        if len(workers) != last:
            report(f"Ray: {len(workers)} of {step.nodes} worker nodes joined", None)
            last = len(workers)
        if len(workers) >= step.nodes:
            return
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{len(workers)} of {step.nodes} Ray worker nodes joined after "
                f"{step.timeout:g} s (setting spcs.ray.join_timeout); see `neve deploy spcs logs`"
            )
        time.sleep(step.interval)


def _statement(connection: Any, step: Statement, report: Report) -> None:
    if step.needs and not _rows(connection, exists_sql(step.needs)):
        report(f"skipped (no {step.needs}): {step.sql.splitlines()[0]}", None)
        return
    rows = _rows(connection, step.sql)
    report(step.sql.splitlines()[0], rows if step.shows else None)


def _wait(connection: Any, step: Wait, report: Report) -> None:
    deadline = time.monotonic() + step.timeout
    last: list[str] | None = None
    while True:
        rows = _rows(connection, step.sql)
        instances = json.loads(next(iter(rows[0].values()))) if rows else []
        states = sorted({i.get("status", "UNKNOWN") for i in instances})
        if states != last:
            report(f"{step.service}: {', '.join(states) or 'no instances yet'}", None)
            last = states
        if instances and states == ["READY"]:
            return
        failed = [i for i in instances if i.get("status") == "FAILED"]
        if failed:
            raise DeployError(f"{step.service} failed: {failed[0].get('message', '')}")
        if time.monotonic() >= deadline:
            raise DeployError(
                f"{step.service} was not READY after {step.timeout:g} s "
                "(setting spcs.wait_timeout); see `neve deploy spcs logs`"
            )
        time.sleep(step.interval)


def _rows(connection: Any, sql: str) -> list[dict[str, Any]]:
    import snowflake.connector

    try:
        cursor = connection.cursor(snowflake.connector.DictCursor)
        cursor.execute(sql)
        return list(cursor.fetchall())
    except snowflake.connector.Error as exc:
        raise DeployError(f"{sql.splitlines()[0]}: {exc.msg or exc}") from None


def urls(rows: list[dict[str, Any]]) -> list[str]:
    """The public endpoints' addresses among SHOW ENDPOINTS rows."""
    return [
        f"{row['name']}: https://{row['ingress_url']}"
        for row in rows
        if str(row.get("is_public", "")).lower() == "true" and row.get("ingress_url")
    ]
