"""A stand-in for a Snowflake account (none can be reached from here), speaking the wire
protocol of snowflake-connector-python: login, then each statement as a query request.
It records the statements in order, keeps which services exist, answers
SYSTEM$GET_SERVICE_STATUS (PENDING, then READY), SHOW ENDPOINTS, the DNS domain and the
Ray nodes a hub on Ray lists (one more per poll), and refuses a statement given to
`fail_on`. Its stages are folders (`stages`): their directory tables
list the files with MD5s and presigned URLs this server answers (fakesnow, the emulator,
has neither directory tables nor GET_PRESIGNED_URL). Plain ASGI on uvicorn, started in a
thread by the tests."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from tests.standins import Receive, Scope, Send, read_body, send_json

_DIRECTORY = r"FROM DIRECTORY\(@([\w.]+)\)(?:\s+WHERE STARTSWITH\(RELATIVE_PATH, '([^']*)'\))?"


@dataclass
class Account:
    statements: list[str] = field(default_factory=list)
    services: set[str] = field(default_factory=set)
    status_polls: dict[str, int] = field(default_factory=dict)
    fail_on: str | None = None
    stages: dict[str, Path] = field(default_factory=dict)  # DB.SCHEMA.STAGE → its files
    url: str = ""  # where this server answers, for presigned URLs
    ray_workers: int = 2  # Ray worker nodes the hub's <prefix>_RAY_NODES() comes to list

    def answer(self, sql: str) -> tuple[list[str], list[list[Any]]] | str:
        """Columns and rows, or an error message."""
        self.statements.append(sql)
        if self.fail_on and self.fail_on in sql:
            return f"SQL compilation error: refused by the stand-in ({self.fail_on})"
        if m := re.match(r"SHOW SERVICES LIKE '(\w+)' IN SCHEMA (\w+)\.(\w+)", sql):
            name = f"{m[2]}.{m[3]}.{m[1]}"
            return ["name"], [[m[1]]] if name in self.services else []
        if m := re.match(r"CREATE SERVICE IF NOT EXISTS ([\w.]+)", sql):
            self.services.add(m[1])
        elif m := re.match(r"DROP SERVICE IF EXISTS ([\w.]+)", sql):
            self.services.discard(m[1])
        elif m := re.match(r"SELECT SYSTEM\$GET_SERVICE_STATUS\('([\w.]+)'\)", sql):
            polls = self.status_polls[m[1]] = self.status_polls.get(m[1], 0) + 1
            state = "READY" if polls > 1 else "PENDING"
            status = [{"status": state, "message": "Running", "instanceId": "0"}]
            return ["SYSTEM$GET_SERVICE_STATUS"], [[json.dumps(status)]]
        elif m := re.search(
            r"FROM DIRECTORY\(@([\w.]+)\)(?:\s+WHERE STARTSWITH\(RELATIVE_PATH, '([^']*)'\))?", sql
        ):
            if m[1] not in self.stages:
                return f"SQL compilation error: Stage '{m[1]}' does not exist or not authorized."
            root = self.stages[m[1]]
            files = sorted(p for p in root.rglob("*") if p.is_file())
            listed = [(str(p.relative_to(root)), p) for p in files]
            return ["RELATIVE_PATH", "MD5", "SIZE", "URL"], [
                [name, hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_size,
                 f"{self.url}/presigned/{m[1]}/{name}"]
                for name, p in listed if name.startswith(m[2] or "")
            ]  # fmt: skip
        elif sql.startswith("SELECT SYSTEM$GET_SERVICE_DNS_DOMAIN("):
            return ["SYSTEM$GET_SERVICE_DNS_DOMAIN"], [["k3x9q.svc.spcs.internal"]]
        elif m := re.match(r"SELECT ([\w.]+)_RAY_NODES\(\)", sql):
            # The Ray workers join one poll after another, as they start.
            polls = self.status_polls[m[0]] = self.status_polls.get(m[0], 0) + 1
            nodes = [{"address": "10.0.0.1", "alive": True, "head": True}] + [
                {"address": f"10.0.0.{n + 2}", "alive": True, "head": False}
                for n in range(min(polls - 1, self.ray_workers))
            ]
            return ["NODES"], [[json.dumps(nodes)]]
        elif m := re.match(r"SHOW ENDPOINTS IN SERVICE [\w.]+\.(\w+)", sql):
            host = m[1].lower().replace("_", "-")
            ours = [("ui", 8501)] if m[1].endswith("_UI") else [("api", 8000), ("relay", 8001)]
            return ["name", "port", "is_public", "ingress_url"], [
                [name, port, str(name != "relay").lower(),
                 f"{host}.example.snowflakecomputing.app" if name != "relay" else None]
                for name, port in ours
            ]  # fmt: skip
        return ["status"], [["Statement executed successfully."]]


def app_for(account: Account) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        path = scope["path"]
        if m := re.match(r"/presigned/([\w.]+)/(.+)$", path):
            file = account.stages[m[1]] / m[2]
            await send({"type": "http.response.start", "status": 200, "headers": []})
            return await send({"type": "http.response.body", "body": file.read_bytes()})
        if path == "/session/v1/login-request":
            return await _reply(send, {
                "token": "stand-in-token", "masterToken": "stand-in-master",
                "validityInSeconds": 3600, "masterValidityInSeconds": 14400,
                "sessionId": 1, "parameters": [], "sessionInfo": {},
            })  # fmt: skip
        if path == "/queries/v1/query-request":
            sql = json.loads(body)["sqlText"]
            answer = account.answer(sql)
            if isinstance(answer, str):
                refusal = {"sqlState": "42000", "queryId": "q"}
                return await _reply(send, refusal, refused=answer)
            columns, rows = answer
            rowtype = [{"name": c, "type": "text", "length": 16777216, "precision": None,
                        "scale": None, "nullable": True} for c in columns]  # fmt: skip
            return await _reply(send, {
                "parameters": [], "rowtype": rowtype,
                "rowset": [[None if v is None else str(v) for v in r] for r in rows],
                "total": len(rows), "returned": len(rows), "queryId": f"q{len(account.statements)}",
                "queryResultFormat": "json", "finalDatabaseName": None,
            })  # fmt: skip
        return await _reply(send, {})

    return app


async def _reply(send: Send, data: dict[str, Any], refused: str | None = None) -> None:
    """Snowflake's envelope: success, or a refusal with its error code and message."""
    envelope = {"success": refused is None, "code": refused and "002003", "message": refused}
    await send_json(send, 200, {**envelope, "data": data})


@contextmanager
def running(account: Account, port: int) -> Iterator[None]:
    server = uvicorn.Server(
        uvicorn.Config(app_for(account), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the Snowflake stand-in did not start"
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
