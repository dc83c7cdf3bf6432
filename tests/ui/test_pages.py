"""Sign-in, the documents page and the monitoring page in AppTest, against real hubs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from streamlit.testing.v1 import AppTest

from neve.ui.session import PROXY_HEADER, forwarded
from tests.conftest import Hub, start_hub, stop_hub
from tests.ui.conftest import make_keys

NOTE = b"""# Tidewater depot

The Tidewater depot opens at 06:40 on weekdays. Its loading bay takes vans up to 3.5 t.
"""


def test_sign_in_with_a_key_and_out_again(tmp_path: Path, app: Callable[[str], AppTest]) -> None:
    keys = make_keys(tmp_path / "data", ada="admin", bo="user")
    hub = start_hub(tmp_path)
    try:
        at = app(hub.url).run()
        assert [t.value for t in at.title] == ["Sign in"] and not at.chat_input
        at.text_input[0].input("not-a-key")
        at.button[0].click().run()
        assert "That key was not accepted" in at.error[0].value
        at.text_input[0].input(keys["bo"])
        at.button[0].click().run()
        assert not at.exception and at.chat_input
        assert "Signed in as **bo** (user)" in [c.value for c in at.sidebar.caption]
        # A user sees their own feedback, not the hub's request charts.
        at.switch_page("views/monitoring.py").run()
        assert "Request charts need an admin key" in at.info[0].value
        # An admin, in a session of their own, signs out and is asked for a key again.
        at = app(hub.url)
        at.session_state["api_key"] = keys["ada"]
        at.run()
        assert "Signed in as **ada** (admin)" in [c.value for c in at.sidebar.caption]
        [sign_out] = [b for b in at.sidebar.button if b.label == "Sign out"]
        sign_out.click().run()
        assert [t.value for t in at.title] == ["Sign in"]
    finally:
        stop_hub(hub)


def test_the_snowflake_ingress_identity_is_forwarded_and_nothing_else() -> None:
    headers = {PROXY_HEADER: "carol", "Cookie": "session=1", "Authorization": "Bearer x"}
    assert forwarded(headers) == {PROXY_HEADER: "carol"}
    assert forwarded({"Cookie": "session=1"}) == {}


def test_documents_upload_list_reindex_and_delete(
    ui_hub: Hub, app: Callable[[str], AppTest]
) -> None:
    at = app(ui_hub.url).run()
    at.switch_page("views/documents.py").run()
    assert at.title[0].value == "Documents"
    at.file_uploader[0].set_value(
        [("tidewater.md", NOTE, "text/markdown"), ("broken.pdf", b"%PDF-1.4 no", "application/pdf")]
    )
    [upload] = [b for b in at.button if b.label == "Upload and index"]
    upload.click().run()
    assert not at.exception
    assert at.success[0].value.startswith("Tidewater depot: indexed, 1 passages from 1 page(s)")
    assert at.error[0].value.startswith("broken.pdf: failed (")
    listed = {d["title"]: d for d in httpx.get(f"{ui_hub.api}/documents").json()["data"]}
    assert listed["Tidewater depot"]["status"] == "indexed"
    assert listed["broken.pdf"]["status"] == "failed"
    table = at.dataframe[0].value
    assert {"Tidewater depot", "broken.pdf"} <= set(table["title"])
    failed = table[table["title"] == "broken.pdf"]["status"].iloc[0]
    assert failed.startswith("failed: ")

    good, bad = listed["Tidewater depot"]["id"], listed["broken.pdf"]["id"]
    at.multiselect[0].set_value([good]).run()
    [again] = [b for b in at.button if b.label == "Re-index"]
    again.click().run()
    assert "Tidewater depot: re-indexed, 1 passages from 1 page(s)" in [s.value for s in at.success]
    at.multiselect[0].set_value([bad]).run()
    [drop] = [b for b in at.button if b.label == "Delete"]
    drop.click().run()
    assert f"broken.pdf ({bad}): deleted" in [s.value for s in at.success]
    left = {d["id"] for d in httpx.get(f"{ui_hub.api}/documents").json()["data"]}
    assert good in left and bad not in left
    assert "broken.pdf" not in set(at.dataframe[0].value["title"])


def test_monitoring_shows_usage_and_the_feedback_rows(
    ui_hub: Hub, app: Callable[[str], AppTest]
) -> None:
    ask = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    assert httpx.post(f"{ui_hub.api}/chat/completions", json=ask, timeout=60).status_code == 200
    for score, comment in [(1, "monitor: helpful"), (-1, "monitor: wrong date")]:
        body = {"score": score, "comment": comment, "prompt": "q", "response": "a"}
        assert httpx.post(f"{ui_hub.api}/feedback", json=body).status_code == 201
    at = app(ui_hub.url).run()
    at.switch_page("views/monitoring.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Requests"]) >= 1 and int(metrics["Feedback"]) >= 2
    assert metrics["Latency p50"].endswith(" ms")
    comments = set(at.dataframe[0].value["comment"])
    assert {"monitor: helpful", "monitor: wrong date"} <= comments
    at.selectbox[0].select("👎 down").run()
    shown = at.dataframe[0].value
    assert set(shown["score"]) == {-1} and "monitor: wrong date" in set(shown["comment"])
    assert [b.label for b in at.download_button] == ["Download CSV"]
