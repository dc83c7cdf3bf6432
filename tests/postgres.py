"""A real PostgreSQL server for tests: initdb in a temporary directory, the server on
127.0.0.1. PostgreSQL refuses to run as root, so under root it runs as `nobody`."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

NOBODY = 65534


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path is None:
        raise RuntimeError("PostgreSQL's server is not installed (make test installs it)")
    return Path(on_path).parent


class PgServer:
    def __init__(self, port: int) -> None:
        self.port = port
        # Not under pytest's tmp_path: its parents are private to root, and `nobody`
        # must reach the data directory.
        self.root = Path(tempfile.mkdtemp(prefix="neve-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._as = []
        if os.geteuid() == 0:
            os.chown(self.root, NOBODY, NOBODY)
            self._as = [
                "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"
            ]  # fmt: skip
        subprocess.run(
            [*self._as, str(pg_bin() / "initdb"), "-D", str(self.data), "-U", "neve",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://neve@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [*self._as, str(pg_bin() / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.root), "-c", "fsync=off",
             "-c", "max_connections=300"],
            stdout=log, stderr=log,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self._dsn("postgres")).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start:\n" + (self.root / "server.log").read_text()
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: close connections
            self.process.wait(timeout=30)
            self.process = None

    def create_database(self, name: str) -> str:
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=neve dbname={database}"
