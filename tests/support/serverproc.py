"""Start the real server (`exposure-guard-server serve`, uvicorn) as a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import requests

ADMIN_PASSWORD = "fault-test password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: Optional[dict] = None, check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, EXPOSURE_GUARD_ADMIN_PASSWORD=ADMIN_PASSWORD)
    full_env.update(env or {})
    result = subprocess.run([sys.executable, "-m", "exposure_guard_server", *args], capture_output=True, text=True,
                            env=full_env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError("exposure-guard-server %s failed (%d): %s%s" % (
            " ".join(args), result.returncode, result.stdout, result.stderr))
    return result


class ServerProcess:
    def __init__(self, db_url: str, port: int, log_path: Path, workers: int = 1, extra: Optional[List[str]] = None):
        self.db_url, self.port, self.log_path, self.workers = db_url, port, log_path, workers
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen] = None
        self.url = "http://127.0.0.1:%d" % port

    def start(self, wait: bool = True) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "exposure_guard_server", "serve", "--db", self.db_url, "--listen",
                 "127.0.0.1:%d" % self.port, "--workers", str(self.workers), *self.extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("server exited with %s; log:\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise AssertionError("server did not become ready; log:\n" + self.log_tail())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # the whole group: uvicorn's worker processes too
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Workers of a killed supervisor may linger for a moment: wait until the group is gone.
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            if sig == signal.SIGKILL:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
            time.sleep(0.05)
        self.proc = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-lines:])
        except OSError:
            return ""


def pg_database(name: str) -> Optional[str]:
    """A fresh database ``name`` on the PostgreSQL of EXPOSURE_GUARD_TEST_PG_URL (dropped first); None without it."""
    url = os.environ.get("EXPOSURE_GUARD_TEST_PG_URL")
    if not url:
        return None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from exposure_guard_server.db import normalise_url

    url = normalise_url(url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name))
        conn.execute(text('CREATE DATABASE "%s"' % name))
    admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)
