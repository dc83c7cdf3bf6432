"""End to end in a real headless Chromium against `neve up` on 127.0.0.1: what a person
sees. A screenshot of each page goes to artifacts/screenshots/."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.conftest import Hub, free_port, start_hub, stop_hub
from tests.ui.conftest import make_keys, screenshot, ui_answers, wait_for_ui

DEPOT = """# Larkspur depot

The Larkspur depot keeps its spare forklift batteries in cage 14, next to the north dock.
Batteries are charged overnight and signed out at the gatehouse.
"""


def chat_input(page: Page) -> object:
    return page.get_by_test_id("stChatInputTextArea")


def open_chat(page: Page, url: str, max_tokens: int) -> None:
    page.goto(url)
    expect(chat_input(page)).to_be_enabled()
    page.get_by_text("Settings").click()
    tokens = page.get_by_label("Max tokens")
    tokens.fill(str(max_tokens))
    tokens.press("Enter")


def send(page: Page, text: str, placeholder: str = "Send a message") -> None:
    box = page.get_by_placeholder(placeholder)
    expect(box).to_be_enabled()
    box.fill(text)
    box.press("Enter")


def test_an_answer_streams_in_and_thumbs_down_shows_on_monitoring(
    ui_hub: Hub, new_page: Callable[..., Page]
) -> None:
    page = new_page()
    open_chat(page, wait_for_ui(ui_hub), max_tokens=200)
    send(page, "Describe a harbour at dawn.")
    answer = page.get_by_test_id("stChatMessage").nth(1)
    done = page.get_by_test_id("stFeedback")  # thumbs come with the finished answer
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while not done.count() and time.monotonic() < deadline:
        body = answer.get_by_test_id("stMarkdown")
        text = body.first.inner_text().rstrip("▌") if body.count() else ""
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        time.sleep(0.05)
    # It grew in place, piece by piece, rather than arriving at once.
    assert len(seen) >= 3, seen
    assert all(later.startswith(earlier.strip()) for earlier, later in pairwise(seen)), seen
    final = answer.get_by_test_id("stMarkdown").first.inner_text()
    assert final.startswith(seen[-1].strip())
    screenshot(page, "chat")

    page.get_by_role("radio", name="Thumbs down").click()
    page.get_by_label("Comment (optional)").fill("browser says: missed the point")
    page.get_by_role("button", name="Send feedback").click()
    expect(page.get_by_text("Thanks, your feedback is recorded.")).to_be_visible()

    page.get_by_role("link", name="Monitoring").click()
    # The table draws on a canvas; its cells are also in the page for screen readers.
    cell = page.locator("[role=gridcell]", has_text="browser says: missed the point")
    expect(cell).to_be_attached()
    screenshot(page, "monitoring")


def test_an_uploaded_document_is_cited_in_the_answer(
    ui_hub: Hub, new_page: Callable[..., Page], tmp_path: Path
) -> None:
    note = tmp_path / "larkspur.md"
    note.write_text(DEPOT)
    page = new_page()
    page.goto(f"{wait_for_ui(ui_hub)}/documents")
    page.locator("input[type=file]").set_input_files(note)
    page.get_by_role("button", name="Upload and index").click()
    expect(page.get_by_text("Larkspur depot: indexed")).to_be_visible()
    screenshot(page, "documents")

    page.get_by_role("link", name="Chat").click()
    expect(chat_input(page)).to_be_enabled()
    page.get_by_test_id("stRadio").get_by_text("Documents").click()  # the mode
    question = "Where does the Larkspur depot keep its spare forklift batteries?"
    send(page, question, placeholder="Ask your documents")
    sources = page.get_by_text("Sources", exact=True)
    expect(sources).to_be_visible()
    expect(page.get_by_text("[1] Larkspur depot")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_have_count(0, timeout=120_000)
    screenshot(page, "grounded-answer")


def test_the_page_waits_for_the_model_then_opens_by_itself(
    tmp_path: Path, new_page: Callable[..., Page]
) -> None:
    # Behind Snowpark Container Services ingress: the caller is named by a header.
    make_keys(tmp_path / "gw" / "data", ada="admin")
    port = free_port()
    gateway = start_hub(tmp_path / "gw", "trust_proxy_identity=true", command="up",
                        upstream=f"http://127.0.0.1:{port}", wait_ready=False)  # fmt: skip
    upstream = None
    try:
        page = new_page(**{"Sf-Context-Current-User": "carol"})
        page.goto(wait_for_ui(gateway))
        expect(page.get_by_text("The model is not ready yet")).to_be_visible()
        expect(page.get_by_text("Retrying in")).to_be_visible()
        expect(chat_input(page)).to_be_disabled()
        expect(page.get_by_text("Signed in as carol (user)")).to_be_visible()
        screenshot(page, "waiting")
        upstream = start_hub(tmp_path / "up", port=port)  # the model it waits for
        expect(chat_input(page)).to_be_enabled(timeout=60_000)
        expect(page.get_by_text("The model is not ready yet")).to_have_count(0)
        assert httpx.get(f"{gateway.url}/ready").status_code == 200
        screenshot(page, "ready")
    finally:
        stop_hub(gateway)
        if upstream is not None:
            stop_hub(upstream)
    # The UI goes with the hub that started it.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ui_answers(gateway):
        time.sleep(0.2)
    assert not ui_answers(gateway)


def test_stop_ends_an_answer_and_keeps_what_came(
    ui_hub: Hub, new_page: Callable[..., Page]
) -> None:
    page = new_page()
    open_chat(page, wait_for_ui(ui_hub), max_tokens=2000)
    send(page, "Write a very long story about a lighthouse keeper.")
    answer = page.get_by_test_id("stChatMessage").nth(1)
    expect(answer.get_by_test_id("stMarkdown").first).to_contain_text(" ")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped.")).to_be_visible()
    kept = answer.get_by_test_id("stMarkdown").first.inner_text()
    time.sleep(1)
    assert answer.get_by_test_id("stMarkdown").first.inner_text() == kept  # no longer growing
    assert httpx.get(f"{ui_hub.url}/ready").json()["running"] == 0  # nor generating
    screenshot(page, "stopped")
