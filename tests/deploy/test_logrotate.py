"""The shipped logrotate file (deploy/logrotate/exposure-guard-prober): logrotate reads it without an error,
it covers the file the prober unit logs to, and rotating it under the real prober (started with the unit's
own command line, on loopback) loses no line: the prober keeps writing into the same, truncated file."""

from __future__ import annotations

import json
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path
from typing import List

import pytest
import requests

from tests.deploy.shipped import LOGROTATE, PROBER_ENV, PROBER_UNIT, exec_argv, python_argv, unit_environment
from tests.support.paths import SRC
from tests.support.serverproc import free_port
from tests.support.wait import wait_for

LOGROTATE_BIN = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
needs_logrotate = pytest.mark.skipif(LOGROTATE_BIN is None, reason="logrotate is not installed (apt-get install logrotate)")


def patterns(text: str) -> List[str]:
    return [line.split("{")[0].strip() for line in text.splitlines() if line.strip().endswith("{")]


def test_it_covers_the_log_file_the_prober_unit_writes() -> None:
    argv = exec_argv(PROBER_UNIT, unit_environment(PROBER_UNIT, PROBER_ENV))
    log_file = argv[argv.index("--log-file") + 1]
    assert any(fnmatch(log_file, pattern) for pattern in patterns(LOGROTATE.read_text("utf-8"))), log_file
    assert "copytruncate" in LOGROTATE.read_text("utf-8")  # the prober has no signal to reopen its log


def rotate(config: Path, state: Path, debug: bool = False) -> str:
    assert LOGROTATE_BIN is not None
    result = subprocess.run([LOGROTATE_BIN, "--debug" if debug else "--force", "--verbose", "--state", str(state),
                             str(config)], capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "error:" not in out, out
    return out


def local_config(tmp_path: Path, logs: Path, text: str = "") -> Path:
    """The shipped file with its log folder moved to ``logs`` (under tmp)."""
    text = text or LOGROTATE.read_text("utf-8")
    assert "/var/log/exposure-guard-prober/" in text
    config = tmp_path / "logrotate.conf"
    config.write_text(text.replace("/var/log/exposure-guard-prober/", "%s/" % logs))
    config.chmod(0o644)  # logrotate refuses a config file others may write
    return config


@needs_logrotate
def test_logrotate_reads_it_without_an_error(tmp_path: Path) -> None:
    logs = tmp_path / "exposure-guard-prober"
    logs.mkdir()
    rotate(local_config(tmp_path, logs), tmp_path / "state", debug=True)
    broken = local_config(tmp_path, logs, LOGROTATE.read_text("utf-8").replace("copytruncate", "copytrunc"))
    with pytest.raises(AssertionError, match="unknown option"):  # the check is not vacuous
        rotate(broken, tmp_path / "state2", debug=True)


@needs_logrotate
def test_rotating_under_the_running_prober_loses_no_line(tmp_path: Path) -> None:
    logs = tmp_path / "log"
    (logs / "exposure-guard-prober").mkdir(parents=True)
    port = free_port()
    env = unit_environment(PROBER_UNIT, PROBER_ENV, overrides={"EG_PROBER_PORT": str(port)})
    argv = python_argv(exec_argv(PROBER_UNIT, env, logs=str(logs)))
    log_file = logs / "exposure-guard-prober" / "access.jsonl"
    assert argv[argv.index("--log-file") + 1] == str(log_file)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(SRC), **env})
    try:
        url = "http://127.0.0.1:%d/healthz" % port

        def records(path: Path) -> List[dict]:
            try:
                return [json.loads(line) for line in path.read_text("utf-8").splitlines()]
            except FileNotFoundError:
                return []

        def health(tag: str) -> None:
            answer = requests.get(url + "?" + tag, timeout=10)
            assert answer.status_code == 200, answer.text

        def logged(path: Path, count: int) -> List[dict]:
            def enough() -> List[dict]:
                assert proc.poll() is None, "the prober exited: %s" % proc.stderr.read().decode()  # type: ignore[union-attr]
                found = records(path)
                return found if len(found) >= count else []

            return wait_for("%d line(s) in %s" % (count, path.name), enough)

        (listening,) = logged(log_file, 1)
        assert listening["event"] == "listening" and listening["trusted_proxies"] == ["127.0.0.1/32"], listening
        health("before")
        before = logged(log_file, 2)
        rotate(local_config(tmp_path, logs / "exposure-guard-prober"), tmp_path / "state")
        rotated = logs / "exposure-guard-prober" / "access.jsonl.1"
        assert records(rotated) == before  # delaycompress: the newest rotation stays plain text
        assert log_file.stat().st_size == 0
        health("after")
        (after,) = logged(log_file, 1)  # the same file, from its start: no hole of NUL bytes where it was
        assert log_file.read_bytes().startswith(b"{") and after.get("event") != "listening"
        assert len(records(rotated)) == len(before)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
