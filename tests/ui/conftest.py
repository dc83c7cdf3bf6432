"""The UI under test: AppTest runs its pages in this process against a real hub; a real
headless Chromium (Debian's) drives the app that `neve up` serves. Screenshots go to
artifacts/screenshots/ (ignored by git)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from streamlit.testing.v1 import AppTest

import neve.ui
from neve.store.db import Store
from neve.store.keys import create_key
from tests.conftest import Hub, start_hub, stop_hub

APP = Path(neve.ui.__file__).with_name("app.py")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
# As the machine's own probe starts it: without the background-networking flags Chromium
# keeps trying to reach Google's hosts, which this closed network refuses.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip
RUN_TIMEOUT = 120  # seconds an AppTest run may take (it may stream a whole answer)


def make_keys(data: Path, **roles: Any) -> dict[str, str]:
    """Keys for the named users (name=role), in the hub's database before it starts."""
    store = Store(f"sqlite:///{data / 'neve.db'}")
    store.migrate()
    made = {name: create_key(store, name, role=role)[0] for name, role in roles.items()}
    store.close()
    return made


@pytest.fixture(scope="package")
def ui_hub(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Hub]:
    """`neve up`, as a newcomer starts it, with the session's embedding export."""
    started = start_hub(tmp_path_factory.mktemp("ui"), f"models_dir={models_dir}", command="up")
    yield started
    stop_hub(started)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], AppTest]:
    """An AppTest of the whole app (sign-in and navigation included) against a hub."""

    def make(url: str) -> AppTest:
        monkeypatch.setenv("NEVE_URL", url)
        return AppTest.from_file(APP, default_timeout=RUN_TIMEOUT)

    return make


def ui_answers(hub: Hub) -> bool:
    try:
        return httpx.get(f"{hub.ui}/_stcore/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for_ui(hub: Hub, timeout: float = 60) -> str:
    assert hub.ui is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ui_answers(hub):
            return hub.ui
        time.sleep(0.2)
    raise AssertionError(f"the UI at {hub.ui} did not start:\n{hub.stdout()}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (scripts/system-packages.sh test)"
    with sync_playwright() as playwright:
        started = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield started
        started.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in contexts of their own (headers given as keyword arguments)."""
    contexts = []

    def make(**headers: str) -> Page:
        context = browser.new_context(
            viewport={"width": 1400, "height": 1000}, extra_http_headers=headers
        )
        context.set_default_timeout(60_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)
