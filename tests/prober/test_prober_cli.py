"""`exposure-guard-prober serve` as a real process: dual-stack listen, JSON log, clean SIGTERM, usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

SRC = str(Path(__file__).resolve().parents[2] / "src")


def start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-m", "exposure_guard_prober", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env, text=True)


def test_serve_dual_stack_and_sigterm():
    process = start("serve", "--listen", "127.0.0.1:0", "--listen", "[::1]:0", "--lab-allow", "127.0.0.0/8,::1",
                    "--token", "abc-token")
    try:
        first = json.loads(process.stderr.readline())
        assert first["event"] == "listening" and first["auth"] is True and first["lab_allow"]
        v4 = next(a for a in first["addresses"] if a.startswith("127."))
        v6 = next(a for a in first["addresses"] if a.startswith("[::1]"))
        assert requests.get("http://%s/healthz" % v4, timeout=5).json()["lab_mode"] is True
        assert requests.get("http://%s/healthz" % v6, timeout=5).status_code == 200
        refused = requests.post("http://%s/v1/probe" % v4, json={"nonce": "n" * 16, "ports": [1]}, timeout=5)
        assert refused.status_code == 401
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        log = process.stderr.read()
        assert "abc-token" not in log
        assert any(json.loads(line).get("event") == "stopping" for line in log.splitlines() if line.strip())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_usage_errors_exit_2(tmp_path):
    for args in (["serve", "--listen", "nonsense"], ["serve", "--lab-allow", "10.0.0.0/33"],
                 ["serve", "--max-ports", "40"], ["serve", "--tls-key", "k.pem"], ["serve", "--head-timeout", "0"],
                 ["serve", "--tls-cert", str(tmp_path / "missing.pem"), "--listen", "127.0.0.1:0"],
                 ["serve", "--token-file", str(tmp_path / "missing")]):
        process = start(*args)
        _out, err = process.communicate(timeout=20)
        assert process.returncode == 2, (args, err)
        assert "exposure-guard-prober:" in err or "usage:" in err


def test_connection_limit_flags_reach_the_config():
    from exposure_guard_prober.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(
        ["serve", "--max-connections-per-source", "3", "--head-timeout", "2.5", "--max-outbound", "40",
         "--max-connections", "100"]))
    assert (config.max_connections_per_source, config.head_timeout, config.max_outbound, config.max_connections) \
        == (3, 2.5, 40, 100)
    defaults = config_from_args(build_parser().parse_args(["serve"]))
    assert (defaults.max_connections_per_source, defaults.head_timeout, defaults.request_timeout,
            defaults.max_outbound) == (8, 5.0, 10.0, 512)
