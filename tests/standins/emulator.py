"""fakesnow (tests/standins/fakesnow_server.py) as a process the tests start, stop and
start again on the same databases, to play a Snowflake account that goes away."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "fakesnow" / "bin" / "python"
SERVER = Path(__file__).with_name("fakesnow_server.py")


@dataclass
class Emulator:
    port: int
    databases: Path
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The connector's environment names, as a user's shell would set them."""
        return {"SNOWFLAKE_ACCOUNT": "fakesnow", "SNOWFLAKE_USER": "fake",
                "SNOWFLAKE_PASSWORD": "snow", "SNOWFLAKE_HOST": "127.0.0.1",
                "SNOWFLAKE_PORT": str(self.port), "SNOWFLAKE_PROTOCOL": "http"}  # fmt: skip

    def start(self) -> None:
        assert PYTHON.exists(), f"fakesnow's venv is missing ({PYTHON}): run `make test`"
        self.databases.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(PYTHON), str(SERVER), str(self.port), str(self.databases)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "fakesnow did not start"
                time.sleep(0.1)
        # fakesnow attaches a database's file when a statement first creates it; an
        # account keeps its databases across an outage, so they are named again here.
        for kept in sorted(self.databases.glob("*.db")):
            self.rows(f"CREATE DATABASE IF NOT EXISTS {kept.stem}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=15)
            self.process = None

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        import snowflake.connector

        kwargs = {"account": "fakesnow", "user": "fake", "password": "snow",
                  "host": "127.0.0.1", "port": self.port, "protocol": "http"}  # fmt: skip
        with snowflake.connector.connect(**kwargs) as connection:
            cursor = connection.cursor()
            cursor.execute(sql)
            return list(cursor.fetchall())
