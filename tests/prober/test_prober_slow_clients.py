"""Slow clients against the real prober process (lab mode, loopback): 1,000 slow connections held from
several 127.x source addresses (half-sent request heads, and TLS connections that never send a
ClientHello) while a legitimate client's health checks and probe requests keep succeeding; with hundreds
of sources the total connection cap refuses cleanly, below the process's descriptor limit.

The prober runs with a low descriptor limit (soft 256, hard 1024 / 512) set for its process only, so the
limit is really reached if the prober does not respect it. Figures are printed (run with -s)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import requests

from exposure_guard_prober.config import ProberConfig, parse_networks
from exposure_guard_prober.limits import FD_RESERVE, ConnectionGate, fit_to_fd_limit
from tests.support.net import established_to, free_port, make_cert
from tests.support.wait import wait_for

SRC = str(Path(__file__).resolve().parents[2] / "src")
NONCE = "n0nce-0123456789"
HALF_HEAD = b"POST /v1/probe HTTP/1.1\r\nHost: probe\r\nContent-Le"
REFUSED_BACKOFF = 1.0  # an attacking slot reconnects this long after the prober closed it (spares the 2 cores)


class ProberProcess:
    """``python -m exposure_guard_prober serve`` with its descriptor limit set to (soft, hard)."""

    def __init__(self, tmp_path: Path, fd_limit: Tuple[int, int], *args: str, tls: bool = True) -> None:
        self.log_file = tmp_path / "prober.jsonl"
        self.cert: Optional[str] = None
        extra: List[str] = []
        if tls:
            self.cert, key = make_cert(tmp_path / "tls", "prober", "/CN=prober", "IP:127.0.0.1")
            extra = ["--tls-cert", self.cert, "--tls-key", key]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exposure_guard_prober", "serve", "--listen", "127.0.0.1:0",
             "--lab-allow", "127.0.0.0/8", "--rate", "6000", "--burst", "1000", "--per-client", "4",
             "--log-file", str(self.log_file), *extra, *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=SRC),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit))
        self.stderr: List[bytes] = []
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()
        listening = wait_for("the prober to listen", lambda: self.event("listening"), timeout=30)
        self.port = int(listening[0]["addresses"][0].rsplit(":", 1)[1])
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)
        self.most_fds = 0
        threading.Thread(target=self._count_fds, daemon=True).start()

    def _count_fds(self) -> None:
        """Samples how many descriptors the prober holds, for as long as it runs."""
        while self.process.poll() is None:
            try:
                self.most_fds = max(self.most_fds, len(os.listdir("/proc/%d/fd" % self.process.pid)))
            except OSError:
                return
            time.sleep(0.02)

    def event(self, name: str) -> List[Dict[str, object]]:
        if not self.log_file.exists():
            return []
        lines = self.log_file.read_text().splitlines()
        return [r for r in (json.loads(line) for line in lines if line.endswith("}")) if r.get("event") == name]

    def get(self, path: str, timeout: float = 30) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout, verify=self.cert or True)

    def metrics(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        for line in self.get("/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, _space, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return b"".join(self.stderr).decode("utf-8", "replace")


class SlowAttack:
    """``slots`` slow connections from ``sources`` in a thread of its own. Even slots never send a byte
    (against TLS: never a ClientHello); odd slots send half a request head (against TLS: after the
    handshake). A slot whose connection the prober closes (or refuses) connects again, so the attack keeps
    pressing until ``stop()``."""

    def __init__(self, port: int, sources: List[str], slots: int, tls: Optional[ssl.SSLContext]) -> None:
        self.port, self.sources, self.slots, self.tls = port, sources, slots, tls
        self.attempts = self.connected = self.failed = self.closed_by_prober = 0
        self.open = 0
        self.most_open = 0
        self.stopping = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> SlowAttack:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.thread.join(60)

    async def _main(self) -> None:
        tasks = [asyncio.ensure_future(self._slot(index)) for index in range(self.slots)]
        while not self.stopping:
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _slot(self, index: int) -> None:
        source = self.sources[index % len(self.sources)]
        silent = index % 2 == 0
        while not self.stopping:
            self.attempts += 1
            writer = None
            try:
                use_tls = self.tls if (self.tls is not None and not silent) else None
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(source, 0), ssl=use_tls,
                    server_hostname="127.0.0.1" if use_tls else None), 20)
                if not silent:
                    writer.write(HALF_HEAD)
                self.connected += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
                try:
                    while await reader.read(4096):  # until the prober hangs up (after a 408 or 503, or none)
                        pass
                    self.closed_by_prober += 1
                except (OSError, ssl.SSLError):
                    self.closed_by_prober += 1
                finally:
                    self.open -= 1
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                self.failed += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(REFUSED_BACKOFF)


def legit_round(prober: ProberProcess, closed_port: int, latencies: List[float], failures: List[str]) -> None:
    """One health check and one probe request from 127.0.0.1 (a hang bound of 10 s each); stops trying
    after three failures (the test has failed by then)."""
    for what in ("healthz", "probe"):
        if len(failures) >= 3:
            return
        started = time.monotonic()
        try:
            if what == "healthz":
                answer = prober.get("/healthz", timeout=10)
            else:
                answer = requests.post(prober.url + "/v1/probe", json={"nonce": NONCE, "ports": [closed_port]},
                                       timeout=10, verify=prober.cert or True)
            ok = answer.status_code == 200 and (what == "healthz" or answer.json()["ports"][0]["state"] == "closed")
            if not ok:
                failures.append("%s: %d %s" % (what, answer.status_code, answer.text[:200]))
        except requests.RequestException as exc:
            failures.append("%s: %s" % (what, exc))
        latencies.append(time.monotonic() - started)


def client_tls(cert: Optional[str]) -> Optional[ssl.SSLContext]:
    if cert is None:
        return None
    context = ssl.create_default_context(cafile=cert)
    return context


@pytest.mark.slow
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_legit_client_served_while_1000_slow_connections_are_held(tmp_path, tls):
    prober = ProberProcess(tmp_path, (256, 1024), "--head-timeout", "3", tls=tls)
    sources = ["127.0.0.%d" % n for n in range(2, 12)]  # 10 attacking sources, 100 slots each
    closed_port = free_port()
    latencies: List[float] = []
    failures: List[str] = []
    try:
        with SlowAttack(prober.port, sources, 1000, client_tls(prober.cert)) as attack:
            wait_for("every attacking slot to have connected (or been refused) once",
                     lambda: attack.connected + attack.failed >= 1000)
            for _ in range(20):
                legit_round(prober, closed_port, latencies, failures)
            # at least one head-timeout cycle: the admitted slow connections are closed and come back
            wait_for("the prober to close admitted slow connections", lambda:
                     prober.metrics().get('exposure_guard_prober_connections_closed_total{reason="head_timeout"}', 0) > 0)
            for _ in range(10):
                legit_round(prober, closed_port, latencies, failures)
            metrics = prober.metrics()
        stderr = prober.stop()
    finally:
        prober.stop()
    refused_source = metrics.get('exposure_guard_prober_connections_refused_total{reason="per_source"}', 0)
    refused_total = metrics.get('exposure_guard_prober_connections_refused_total{reason="total"}', 0)
    timed_out = metrics.get('exposure_guard_prober_connections_closed_total{reason="head_timeout"}', 0)
    print("\n[%s] slow attack: %d slots from %d sources, %d connection attempts (%d connected, %d failed); "
          "prober refused %d at accept (per-source cap) + %d (total cap), closed %d at the head timeout; "
          "most descriptors open in the prober %d (limit 1024, raised from soft 256 to %s)"
          % ("tls" if tls else "plain", attack.slots, len(sources), attack.attempts, attack.connected,
             attack.failed, refused_source, refused_total, timed_out, prober.most_fds,
             prober.event("listening")[0]["fd_limit"]["soft"]))
    print("[%s] legit client: %d requests (healthz + probe) under attack, %d failed; latency median %.3f s, "
          "max %.3f s" % ("tls" if tls else "plain", len(latencies), len(failures), statistics.median(latencies),
                          max(latencies)))
    assert failures == []
    assert refused_source > 0 and timed_out > 0
    assert prober.most_fds < 1024
    assert "out of system resource" not in stderr and "Too many open files" not in stderr, stderr[-2000:]


@pytest.mark.slow
def test_the_prober_holds_1000_slow_connections_at_once_and_serves_a_legit_client(tmp_path):
    """The caps set wide enough that 1,000 slow connections (half TLS without a ClientHello, half a
    half-sent head after the handshake) are all admitted and held at once: the prober still answers a
    legitimate client's health checks and probes while it holds them."""
    prober = ProberProcess(tmp_path, (4096, 4096), "--head-timeout", "300", "--max-connections", "2000",
                           "--max-connections-per-source", "128", tls=True)
    sources = ["127.0.0.%d" % n for n in range(2, 12)]  # 10 sources, 100 slots each: under the per-source cap
    closed_port = free_port()
    latencies: List[float] = []
    failures: List[str] = []
    held: List[int] = []
    try:
        with SlowAttack(prober.port, sources, 1000, client_tls(prober.cert)) as attack:
            wait_for("the prober holding 1,000 slow connections", lambda: established_to(prober.port) >= 1000)
            for _ in range(30):
                legit_round(prober, closed_port, latencies, failures)
                held.append(established_to(prober.port))
            metrics = prober.metrics()
        stderr = prober.stop()
    finally:
        prober.stop()
    refused = sum(v for k, v in metrics.items() if k.startswith("exposure_guard_prober_connections_refused_total"))
    timed_out = metrics.get('exposure_guard_prober_connections_closed_total{reason="head_timeout"}', 0)
    print("\n[held] %d slow connections held by the prober while the legitimate client ran: min %d, max %d "
          "(refused %d, timed out %d); legit client %d requests, %d failed, median %.3f s, max %.3f s"
          % (attack.slots, min(held), max(held), refused, timed_out, len(latencies), len(failures),
             statistics.median(latencies), max(latencies)))
    assert failures == []
    assert min(held) >= 1000  # really held all along, not refused
    assert refused == 0 and timed_out == 0
    assert "Too many open files" not in stderr, stderr[-2000:]


@pytest.mark.slow
def test_total_cap_refuses_cleanly_below_the_descriptor_limit(tmp_path):
    prober = ProberProcess(tmp_path, (128, 512), "--head-timeout", "3", tls=True)
    sources = ["127.0.1.%d" % n for n in range(1, 251)]  # 250 sources x 4 slots: under any per-source cap
    try:
        limits = prober.event("listening")[0]["fd_limit"]
        with SlowAttack(prober.port, sources, 1000, None) as attack:
            wait_for("every attacking slot to have connected (or been refused) once",
                     lambda: attack.connected + attack.failed >= 1000)
            time.sleep(2)  # the attack keeps pressing a while (the descriptor count is sampled meanwhile)
        # the attack is over: the prober is still there and serves again
        health = wait_for("the prober to serve again", lambda: _healthy(prober))
        metrics = prober.metrics()
    finally:
        stderr = prober.stop()
    refused_total = metrics.get('exposure_guard_prober_connections_refused_total{reason="total"}', 0)
    print("\n[total cap] %d slots from %d sources, %d attempts; max_connections fitted to %s (outbound %s) under "
          "the descriptor limit %s; refused %d at the total cap; most descriptors open %d"
          % (attack.slots, len(sources), attack.attempts, limits["max_connections"], limits["max_outbound"],
             limits["soft"], refused_total, prober.most_fds))
    assert health.status_code == 200
    assert limits["max_connections"] + limits["max_outbound"] < 512
    assert refused_total > 0
    assert prober.most_fds < 512
    assert "out of system resource" not in stderr and "Too many open files" not in stderr, stderr[-2000:]


def _healthy(prober: ProberProcess) -> Optional[requests.Response]:
    try:
        answer = prober.get("/healthz")
    except requests.RequestException:
        return None
    return answer if answer.status_code == 200 else None


# ---------------------------------------------------------------- the same rules, in-process and quick
def test_fit_to_fd_limit_keeps_both_caps_below_the_limit():
    config = ProberConfig(max_connections=512, max_outbound=512)
    assert fit_to_fd_limit(config, 20000) is config
    fitted = fit_to_fd_limit(config, 1024)
    assert fitted.max_connections + fitted.max_outbound + FD_RESERVE <= 1024
    assert fitted.max_connections == fitted.max_outbound == (1024 - FD_RESERVE) // 2
    with pytest.raises(ValueError):
        fit_to_fd_limit(config, FD_RESERVE)


def test_gate_counts_per_source_and_exempts_trusted_proxies():
    gate = ConnectionGate(total_cap=5, per_source_cap=2, exempt=parse_networks(["127.0.0.9"]))
    assert [gate.admit("127.0.0.2")[0] for _ in range(3)] == [None, None, "per_source"]
    assert gate.admit("2001:db8::1")[0] is None and gate.admit("2001:db8::2")[0] is None
    assert gate.admit("2001:db8::3")[0] == "per_source"  # one IPv6 /64 is one source
    assert gate.admit("127.0.0.9") == (None, "")  # the proxy: only the total cap applies
    assert gate.admit("127.0.0.9")[0] == "total"
    gate.release("127.0.0.2")
    assert gate.admit("127.0.0.2")[0] is None and gate.total == 5


def test_tls_connections_are_counted_before_the_handshake(start_prober, tmp_path):
    cert, key = make_cert(tmp_path, "prober", "/CN=prober", "IP:127.0.0.1")
    prober = start_prober(tls_cert=cert, tls_key=key, max_connections_per_source=2, head_timeout=30.0)
    silent = [socket.create_connection(("127.0.0.1", prober.port), timeout=30, source_address=("127.0.0.3", 0))
              for _ in range(2)]  # connected, and never a ClientHello
    try:
        wait_for("both silent connections to be counted", lambda: prober.server.connections == 2)
        third = socket.create_connection(("127.0.0.1", prober.port), timeout=30, source_address=("127.0.0.3", 0))
        assert third.recv(100) == b""  # closed at once, without a handshake
        third.close()
        assert prober.server.metrics.value("exposure_guard_prober_connections_refused_total",
                                           reason="per_source") == 1
        # another source is served meanwhile
        assert requests.get("https://127.0.0.1:%d/healthz" % prober.port, timeout=10, verify=cert).status_code == 200
    finally:
        for sock in silent:
            sock.close()


def test_plain_connection_over_the_source_cap_gets_429(start_prober):
    prober = start_prober(max_connections_per_source=1, head_timeout=30.0)
    held = socket.create_connection(("127.0.0.1", prober.port), timeout=30, source_address=("127.0.0.4", 0))
    try:
        wait_for("the held connection to be counted", lambda: prober.server.connections == 1)
        with socket.create_connection(("127.0.0.1", prober.port), timeout=30,
                                      source_address=("127.0.0.4", 0)) as refused:
            answer = b""
            while True:
                chunk = refused.recv(4096)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 429 ") and b'"busy"' in answer
    finally:
        held.close()
