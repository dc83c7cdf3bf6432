"""Where models come from: the shipped package, local paths, and Hugging Face repos.

huggingface.co cannot be reached here, so the download tests run huggingface_hub against
a stand-in hub on 127.0.0.1 that serves the shipped GGUF file under a repo name and holds
the download open until the test lets it finish.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from neve.engine import catalog
from tests.conftest import NEVE, Hub, free_port, offline_env, start_hub, stop_hub

REPO = "neve-test/tiny-chat-GGUF"
FILE = "tiny-chat.Q4_1.gguf"


def shipped_gguf() -> Path:
    return catalog.resolve("smollm2", model_file=None, models_dir=Path("unused")).path


class StandInHub:
    """Answers huggingface_hub's HEAD and GET for one file; GET waits for `release`."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.release = threading.Event()
        self.downloads = 0
        etag = hashlib.sha256(data).hexdigest()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _headers(self) -> bool:
                if self.path != f"/{REPO}/resolve/main/{FILE}":
                    self.send_error(404)
                    return False
                self.send_response(200)
                self.send_header("X-Repo-Commit", "a" * 40)
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(hub.data)))
                self.end_headers()
                return True

            def do_HEAD(self) -> None:
                self._headers()

            def do_GET(self) -> None:
                if not self._headers():
                    return
                hub.downloads += 1
                half = len(hub.data) // 2
                self.wfile.write(hub.data[:half])
                self.wfile.flush()
                hub.release.wait(timeout=60)
                self.wfile.write(hub.data[half:])

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def stand_in_hub() -> Iterator[StandInHub]:
    hub = StandInHub(shipped_gguf().read_bytes())
    yield hub
    hub.close()


def test_ready_is_503_while_the_model_downloads_then_200_and_cached(
    tmp_path: Path, stand_in_hub: StandInHub
) -> None:
    env = offline_env(HF_ENDPOINT=stand_in_hub.url)
    hub: Hub = start_hub(tmp_path, f"model={REPO}", f"model_file={FILE}", env=env, wait_ready=False)
    try:
        loading = httpx.get(f"{hub.url}/ready")
        assert loading.status_code == 503
        assert int(loading.headers["retry-after"]) >= 1
        assert loading.json()["status"] == "loading"
        assert httpx.get(f"{hub.url}/health").status_code == 200
        early = httpx.post(
            f"{hub.api}/chat/completions",
            json={"messages": [{"role": "user", "content": "Hi"}]},
        )
        assert early.status_code == 503 and "retry-after" in early.headers

        stand_in_hub.release.set()
        deadline = time.monotonic() + 60
        while httpx.get(f"{hub.url}/ready").status_code != 200:
            assert time.monotonic() < deadline, hub.stdout()
            time.sleep(0.05)
        models = httpx.get(f"{hub.api}/models").json()["data"]
        assert models[0]["id"] == REPO
        reply = hub.client().chat.completions.create(
            model=REPO, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        stop_hub(hub)

    # The file now sits in the models directory: the next start needs no network.
    again = start_hub(tmp_path, f"model={REPO}", f"model_file={FILE}")
    stop_hub(again)
    assert stand_in_hub.downloads == 1


def test_an_unreachable_hub_stops_start_up_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = subprocess.run(
        [*NEVE, "serve", "--port", str(port), "--data-dir", str(tmp_path), "--model", REPO],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert REPO in errors[0] and "unreachable" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_local_path_file_or_folder(tmp_path: Path) -> None:
    gguf = tmp_path / "models" / "mine.gguf"
    gguf.parent.mkdir()
    shutil.copy(shipped_gguf(), gguf)
    by_file = catalog.resolve(str(gguf), model_file=None, models_dir=tmp_path)
    by_folder = catalog.resolve(str(gguf.parent), model_file=None, models_dir=tmp_path)
    assert by_file.path == by_folder.path == gguf
    assert catalog.display_name(str(gguf)) == "mine"
    assert catalog.display_name("smollm2") == "smollm2"
    assert catalog.display_name(REPO) == REPO


def test_folder_with_two_models_asks_for_model_file(tmp_path: Path) -> None:
    for name in ("a.gguf", "b.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(catalog.ModelUnavailable, match="model_file"):
        catalog.resolve(str(tmp_path), model_file=None, models_dir=tmp_path)
    picked = catalog.resolve(str(tmp_path), model_file="b.gguf", models_dir=tmp_path)
    assert picked.path.name == "b.gguf"


def test_a_name_that_is_nothing_says_what_is_accepted(tmp_path: Path) -> None:
    with pytest.raises(catalog.ModelUnavailable, match="catalog name"):
        catalog.resolve("no such model!", model_file=None, models_dir=tmp_path)


def test_a_file_that_is_not_gguf_fails_start_up_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"this is not a model")
    result = subprocess.run(
        [*NEVE, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
         "--model", str(bogus)],
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "error: cannot load model" in result.stdout
    assert "not a GGUF model" in result.stdout
