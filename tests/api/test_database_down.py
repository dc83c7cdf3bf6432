"""A PostgreSQL server that goes away: routes that need it answer 503, chat (and the
keys already known) keep working, and the request log catches up when it is back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psycopg

from neve.store.db import Store
from neve.store.keys import create_key
from tests.conftest import free_port, start_hub, stop_hub
from tests.postgres import PgServer

ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3}


def test_a_database_that_goes_away_and_comes_back(tmp_path: Path) -> None:
    server = PgServer(free_port())
    server.start()
    try:
        url = server.create_database("neve")
        store = Store(url)
        store.migrate()
        key, _ = create_key(store, "ann")
        store.close()
        hub = start_hub(tmp_path, f"database_url={url}", "auth_refresh_interval=0.2")
        try:
            http = httpx.Client(
                base_url=hub.api, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            assert http.post("/feedback", json={"score": 1}).status_code == 201

            server.stop()
            time.sleep(0.5)  # past the key ring's refresh interval: it fails and keeps keys
            assert http.post("/chat/completions", json=ASK).status_code == 200
            down = http.post("/feedback", json={"score": -1})
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "database_unavailable"
            assert down.headers["retry-after"] == "5"
            assert http.get("/conversations").status_code == 503
            assert httpx.get(f"{hub.url}/ready").status_code == 200

            server.start()
            assert http.post("/feedback", json={"score": -1}).status_code == 201
            assert [r["score"] for r in http.get("/feedback").json()["data"]] == [1, -1]
            # The requests made while it was away reach the log once it is back.
            deadline = time.monotonic() + 15
            while True:
                with psycopg.connect(url.replace("+psycopg", "")) as con:
                    statuses = [
                        row[0] for row in con.execute("SELECT status FROM request_log ORDER BY id")
                    ]
                if statuses.count(503) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert statuses.count(503) == 2 and 200 in statuses
        finally:
            stop_hub(hub)
    finally:
        server.remove()
