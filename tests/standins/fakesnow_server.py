"""fakesnow, the maintained Snowflake emulator on DuckDB, as a server that
snowflake-connector-python 5 logs in to. fakesnow 0.12 imports the connector's 4.x modules,
so it runs in a venv of its own (.venv/fakesnow, made by `make test`); connector 5 also
wants the fields of a login answer that fakesnow leaves out (a master token and its
validity), which this adds. Statements go to fakesnow as they are.

Run: .venv/fakesnow/bin/python tests/standins/fakesnow_server.py PORT DB_DIR"""

from __future__ import annotations

import json
import sys
from typing import Any

import fakesnow.server
import uvicorn
from fakesnow.instance import FakeSnow

LOGIN = "/session/v1/login-request"
ADDED = {"masterToken": "fakesnow-master", "validityInSeconds": 3600,
         "masterValidityInSeconds": 14400, "sessionId": 1}  # fmt: skip


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["path"] != LOGIN:
        return await fakesnow.server.app(scope, receive, send)
    start: dict[str, Any] = {}
    parts: list[bytes] = []

    async def kept(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        else:
            parts.append(message.get("body", b""))

    await fakesnow.server.app(scope, receive, kept)
    answer = json.loads(b"".join(parts))
    if answer.get("success"):
        answer["data"] = ADDED | answer["data"]
    body = json.dumps(answer).encode()
    headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
    await send({"type": "http.response.start", "status": start["status"],
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    # Databases kept in files under DB_DIR, so a restarted server has its tables.
    fakesnow.server.shared_fs = FakeSnow(db_path=sys.argv[2])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
