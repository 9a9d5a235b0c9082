"""Run the real prober in-process (its own event loop in a thread) on loopback, in lab mode for 127/8 and ::1."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest

from exposure_guard_prober.config import Listen, ProberConfig, parse_networks
from exposure_guard_prober.server import AccessLog, ProberServer
from tests.support.wait import wait_for

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "src" / "exposure_guard" / "data" / "prober-v1.schema.json"
LOOPBACK = parse_networks(["127.0.0.0/8,::1/128"])


class _Lines(io.StringIO):
    """A thread-safe log sink whose records the test can read back."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def records(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for line in self.getvalue().splitlines() if line.strip()]


class RunningProber:
    def __init__(self, config: ProberConfig) -> None:
        self.sink = _Lines()
        self.server = ProberServer(config, AccessLog(self.sink))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.bound = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def url(self, host: str = "127.0.0.1") -> str:
        port = next(p for h, p in self.bound if (":" in h) == (":" in host))
        return "http://%s:%d" % ("[%s]" % host if ":" in host else host, port)

    @property
    def port(self) -> int:
        return self.bound[0][1]

    def records(self, event: str = "") -> List[Dict[str, Any]]:
        return [r for r in self.sink.records() if not event or r.get("event") == event]

    def connects(self) -> List[Dict[str, Any]]:
        return self.records("connect")

    def requests_logged(self, count: int) -> List[Dict[str, Any]]:
        """The request log lines once there are ``count`` of them: each is written after its answer went out."""
        return wait_for("%d request log line(s)" % count,
                        lambda: len(self.records("request")) >= count and self.records("request"))

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def start_prober():
    """start_prober(**config overrides) -> RunningProber; lab mode on loopback, connect log on."""
    running: List[RunningProber] = []

    def start(**overrides: Any) -> RunningProber:
        base = ProberConfig(listen=(Listen("127.0.0.1", 0), Listen("::1", 0)), lab_allow=LOOPBACK,
                            log_connects=True, rate_per_minute=600, burst=50, connect_timeout=1.0, io_timeout=1.0,
                            deadline=3.0, ssdp_timeout=0.3, igd_probes=())
        prober = RunningProber(dataclasses.replace(base, **overrides))
        running.append(prober)
        return prober

    yield start
    for prober in running:
        prober.stop()


@pytest.fixture(scope="session")
def schema() -> Dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


@pytest.fixture
def validate(schema):
    import jsonschema

    def check(document: Dict[str, Any], part: str = "") -> Dict[str, Any]:
        target = dict(schema, **{"$ref": "#/$defs/" + part}) if part else schema
        if part:
            target.pop("oneOf", None)
        jsonschema.validate(document, target, cls=jsonschema.Draft202012Validator)
        return document

    return check

