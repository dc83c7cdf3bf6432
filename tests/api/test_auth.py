"""Keys from the store guard every route but the probes; callers see their own data;
per-key limits hold and recover; a trusted proxy may name the caller."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.routing import BaseRoute, Route

from neve.api import auth
from neve.api.app import create_app
from neve.api.errors import ANTHROPIC_ROUTES
from neve.api.guards import OPEN_PATHS
from neve.config import load_settings
from neve.store import limits
from neve.store.db import Store
from neve.store.keys import Identity, create_key
from tests.conftest import NEVE, Hub, offline_env, start_hub, stop_hub

ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5}


@dataclass
class Keyed:
    hub: Hub
    data: Path
    keys: dict[str, str]

    def get(self, path: str, who: str | None = None, **kwargs: object) -> httpx.Response:
        return httpx.get(f"{self.hub.url}{path}", headers=self.auth(who), **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, who: str | None = None, **kwargs: object) -> httpx.Response:
        return httpx.post(f"{self.hub.url}{path}", headers=self.auth(who), **kwargs)  # type: ignore[arg-type]

    def auth(self, who: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"} if who else {}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    tmp = tmp_path_factory.mktemp("auth")
    store = Store(f"sqlite:///{tmp / 'data' / 'neve.db'}")
    store.migrate()
    made = {
        "ada": create_key(store, "ada", role="admin", groups=["ops"])[0],
        "bo": create_key(store, "bo", groups=["sales"])[0],
        "cy": create_key(store, "cy")[0],
        "dee": create_key(store, "dee", rpm=2)[0],
        "eve": create_key(store, "eve", tpm=5)[0],
        "hal": create_key(store, "hal", tpm=30)[0],
        "ivy": create_key(store, "ivy", tpm=1000)[0],
    }
    store.close()
    hub = start_hub(tmp, "trust_proxy_identity=true", "auth_refresh_interval=0.5")
    yield Keyed(hub, tmp / "data", made)
    stop_hub(hub)


def test_every_route_but_the_probes_needs_a_key(keyed: Keyed, tmp_path: Path) -> None:
    """Walks the app's own route table, so a route added later cannot slip through."""
    app = create_app(load_settings({"data_dir": tmp_path}, environ={}))
    routes = [r for r in _flat(app.routes) if isinstance(r, Route)]
    assert {"/v1/chat/completions", "/v1/feedback", "/relay", "/metrics", "/docs"} <= {
        r.path for r in routes
    }
    checked = 0
    for route in routes:
        path = route.path.replace("{", "").replace("}", "")  # any value for a parameter
        for method in sorted(route.methods or ()):
            bare = httpx.request(method, f"{keyed.hub.url}{path}", json={})
            keyed_reply = httpx.request(
                method, f"{keyed.hub.url}{path}", json={}, headers=keyed.auth("ada"), timeout=60
            )
            if route.path in OPEN_PATHS:
                assert bare.status_code != 401, (method, path)
                continue
            assert bare.status_code == 401, (method, path)
            if path.startswith(ANTHROPIC_ROUTES):  # Anthropic's error shape
                assert bare.json()["error"]["type"] == "authentication_error"
            elif method != "HEAD":  # a HEAD answer has no body
                assert bare.json()["error"]["code"] == "invalid_api_key"
            assert keyed_reply.status_code != 401, (method, path)
            checked += 1
    assert checked >= 12


def _flat(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes of included routers too (FastAPI keeps those nested since 0.12x)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _flat(inner.routes) if inner is not None else [route]


def test_a_wrong_key_or_scheme_gets_401(keyed: Keyed) -> None:
    for header in ("Bearer neve-wrong", keyed.keys["ada"], f"Basic {keyed.keys['ada']}"):
        reply = httpx.get(f"{keyed.hub.api}/models", headers={"Authorization": header})
        assert reply.status_code == 401
    assert keyed.get("/v1/models", "ada").status_code == 200


def test_users_see_their_own_data_and_admins_all(keyed: Keyed) -> None:
    keyed.post("/v1/feedback", "bo", json={"score": 1, "comment": "bo's"})
    keyed.post("/v1/feedback", "cy", json={"score": -1, "comment": "cy's"})
    mine = keyed.get("/v1/feedback", "bo").json()["data"]
    assert {r["username"] for r in mine} == {"bo"}
    # A user cannot widen the filter to someone else.
    assert keyed.get("/v1/feedback", "bo", params={"user": "cy"}).json()["data"] == mine
    everyone = {r["username"] for r in keyed.get("/v1/feedback", "ada").json()["data"]}
    assert {"bo", "cy"} <= everyone

    chat = keyed.post("/v1/conversations", "bo", json={"title": "secret"}).json()
    assert keyed.get(f"/v1/conversations/{chat['id']}", "cy").status_code == 404
    assert keyed.get("/v1/conversations", "cy").json()["data"] == []
    assert keyed.get(f"/v1/conversations/{chat['id']}", "bo").status_code == 200

    assert keyed.get("/v1/monitoring/summary", "bo").status_code == 403
    assert keyed.get("/v1/monitoring/summary", "ada").status_code == 200


def _neve(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEVE, "keys", *args, "--data-dir", str(data)],
        capture_output=True, text=True, env=offline_env(), timeout=60,
    )  # fmt: skip


def test_keys_made_and_revoked_while_the_hub_runs(keyed: Keyed) -> None:
    made = _neve(keyed.data, "create", "--name", "fay", "--groups", "ops,sales")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert "fay" in made.stderr and "shown only now" in made.stderr
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{keyed.hub.api}/models", headers=headers).status_code == 200

    listed = _neve(keyed.data, "list")
    assert "fay" in listed.stdout and key[:11] in listed.stdout and key not in listed.stdout
    rows = [json.loads(line) for line in _neve(keyed.data, "list", "--json").stdout.splitlines()]
    assert key not in str(rows)
    key_id = next(row["id"] for row in rows if row["user"] == "fay")
    revoked = _neve(keyed.data, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 10
    while httpx.get(f"{keyed.hub.api}/models", headers=headers).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    unknown = _neve(keyed.data, "revoke", "nope")
    assert unknown.returncode == 1 and "no key 'nope'" in unknown.stderr


def test_rate_limits_per_key(keyed: Keyed) -> None:
    assert [keyed.get("/v1/models", "dee").status_code for _ in range(2)] == [200, 200]
    limited = keyed.get("/v1/models", "dee")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in limited.json()["error"]["message"]
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert keyed.get("/v1/models", "cy").status_code == 200  # other keys are unaffected

    assert keyed.post("/v1/chat/completions", "eve", json=ASK, timeout=60).status_code == 200
    spent = keyed.get("/v1/models", "eve")
    assert spent.status_code == 429 and "5 tokens per minute" in spent.json()["error"]["message"]


@pytest.mark.parametrize("kept", ["in memory", "in the database"])
def test_limits_recover_as_the_minute_slides(
    kept: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """One instance's limiter, and a fleet's (its minute in PostgreSQL), on one clock."""
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(auth.time, "time", lambda: clock[0])
    if kept == "in memory":
        limiter = auth.RateLimiter(default_rpm=0, default_tpm=100)
    else:
        store = Store(request.getfixturevalue("postgres").create_database("limits"))
        store.migrate()
        windows = limits.SharedWindows(store, connections=2, timeout=5)
        limiter = auth.SharedRateLimiter(windows, default_rpm=0, default_tpm=100)
    who = Identity(user="u", key_id="k", rpm=2)

    async def slide() -> None:
        admit = limiter.admit
        assert await admit(who) is None and await admit(who) is None
        assert await admit(who) == ("2 requests per minute", 60)
        clock[0] += 45
        assert await admit(who) == ("2 requests per minute", 15)
        clock[0] += 15
        assert await admit(who) is None
        limiter.spend(who, 150)  # one request may overshoot; the next waits
        # A fleet records it in the background (no sleep: this loop's clock is stopped).
        await asyncio.gather(*getattr(limiter, "_spending", ()))
        clock[0] += 1
        assert await admit(who) == ("100 tokens per minute", 59)
        clock[0] += 59
        assert await admit(who) is None
        await limiter.close()

    asyncio.run(slide())


def test_a_key_made_while_the_keys_are_being_read_is_found(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An instance's read of the keys begins, the key is made (on another instance), and
    the caller asks before the read ends: the read did not see the key, so the caller's
    question must cause another. (This passes with reads stamped at their end too: the
    caller waits for the read's lock before it asks. It guards the re-read, not the stamp.)"""
    store = Store(f"sqlite:///{tmp_path / 'neve.db'}")
    store.migrate()
    ring = auth.KeyRing(store, interval=60)
    made: list[str] = []
    real = auth.keys.snapshot

    def read_then_key_made(store: Store) -> auth.keys.KeySnapshot:
        seen = real(store)
        if not made:
            made.append(create_key(store, "bo")[0])
        time.sleep(0.3)  # the read's answer is on its way back
        return seen

    monkeypatch.setattr(auth.keys, "snapshot", read_then_key_made)

    async def race() -> auth.Identity | None:
        reading = asyncio.create_task(ring.refresh(time.monotonic()))
        while not made:
            await asyncio.sleep(0.01)
        found = await ring.lookup(made[0])
        await reading
        return found

    found = asyncio.run(race())
    assert found is not None and found.user == "bo"


def test_a_trusted_proxy_names_the_caller(keyed: Keyed) -> None:
    headers = {"Sf-Context-Current-User": "SNOW_ANALYST"}
    reply = httpx.post(f"{keyed.hub.api}/feedback", json={"score": 1}, headers=headers)
    assert reply.status_code == 201
    assert reply.json()["username"] == "SNOW_ANALYST"


def test_the_request_log_names_user_key_route_and_timings(keyed: Keyed) -> None:
    assert keyed.post("/v1/chat/completions", "cy", json=ASK, timeout=60).status_code == 200
    assert keyed.post("/v1/chat/completions", None, json=ASK).status_code == 401
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(keyed.data / "neve.db") as db:
            rows = db.execute(
                "SELECT username, key_id, route, model, prompt_tokens, completion_tokens,"
                " ttft_ms, latency_ms, status, error FROM request_log"
                " WHERE route = '/v1/chat/completions' AND (username = 'cy' OR status = 401)"
            ).fetchall()
        if len(rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    answered = next(r for r in rows if r[8] == 200)
    user, key_id, _, model, prompt, completion, ttft, latency, _, error = answered
    assert (user, model, completion, error) == ("cy", "smollm2", 5, None)
    assert key_id and prompt > 5 and 0 < ttft <= latency
    refused = next(r for r in rows if r[8] == 401)
    assert refused[0] is None and "API key" in refused[9]


def _logged(keyed: Keyed, user: str, route: str) -> list[tuple[int, int, int]]:
    """(prompt, completion tokens, status) of the user's rows for the route, once written."""
    deadline = time.monotonic() + 10
    while True:
        with sqlite3.connect(keyed.data / "neve.db") as db:
            rows = db.execute(
                "SELECT prompt_tokens, completion_tokens, status FROM request_log"
                " WHERE username = ? AND route = ?", (user, route),
            ).fetchall()  # fmt: skip
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_a_relay_batch_spends_the_keys_tokens(keyed: Keyed) -> None:
    rows = [[i, "Say hi.", {"max_tokens": 4}] for i in range(3)]
    batch = keyed.post("/relay", "hal", json={"data": rows}, timeout=60)
    assert batch.status_code == 200, batch.text
    [(prompt, completion, _)] = _logged(keyed, "hal", "/relay")
    assert prompt > 30 and 3 <= completion <= 12  # three rows' prompts and answers
    after = keyed.get("/v1/models", "hal")
    assert after.status_code == 429 and "30 tokens per minute" in after.json()["error"]["message"]


def test_a_stream_stopped_part_way_spends_what_it_generated(keyed: Keyed) -> None:
    long = {**ASK, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{keyed.hub.api}/chat/completions", json=long,
                      headers=keyed.auth("ivy"), timeout=60) as reply:  # fmt: skip
        pieces = 0
        for line in reply.iter_lines():
            pieces += line.startswith('data: {"id"')
            if pieces == 6:
                break  # the client stops reading and hangs up
    [(prompt, completion, status)] = _logged(keyed, "ivy", "/v1/chat/completions")
    assert status == 200 and prompt > 5
    assert 5 <= completion < 400  # what it had generated when stopped, not nothing
