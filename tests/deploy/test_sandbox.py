"""The programs under what can be reproduced of the units' sandbox without systemd as PID 1, started with the
units' own command lines: MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE, Linux 6.3+, refuses the same
writable-and-executable memory; inherited by every worker process), NoNewPrivileges= and the empty
CapabilityBoundingSet= (setpriv). The server, with the unit's 2 workers, initialises its database, answers,
takes an agent's enrollment and check-in and renders the dashboard, on SQLite and on PostgreSQL (psycopg's
compiled driver); the prober answers a probe. Loopback only.

Not reproduced here: the system call filter, the read-only file system and the service's own user (the
Python of the test machines lives in root's home)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
import requests

from tests.deploy.shipped import (
    BACKUP_UNIT,
    PROBER_ENV,
    PROBER_UNIT,
    SERVER_ENV,
    SERVER_UNIT,
    exec_argv,
    python_argv,
    unit_environment,
)
from tests.support.paths import SRC
from tests.support.serverproc import ADMIN_PASSWORD, free_port, pg_database
from tests.support.wait import wait_for

PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1

# Sets PR_SET_MDWE, checks it holds, then becomes the command (argv[1:]): the flag survives execve and fork.
MDWE_EXEC = """import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(%d, %d, 0, 0, 0) != 0 or libc.prctl(%d, 0, 0, 0, 0) != %d:
    sys.exit("PR_SET_MDWE failed: errno %%d" %% ctypes.get_errno())
os.execv(sys.argv[1], sys.argv[1:])
""" % (PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)


def _why_not() -> Optional[str]:
    if not sys.platform.startswith("linux"):
        return "Linux only"
    if os.geteuid() != 0:
        return "needs root (setpriv drops the capability bounding set)"
    if shutil.which("setpriv") is None:
        return "setpriv is not installed (util-linux)"
    probe = subprocess.run([sys.executable, "-c", MDWE_EXEC, sys.executable, "-c", "pass"], capture_output=True,
                           text=True, timeout=60)
    if probe.returncode != 0:
        return "the kernel has no PR_SET_MDWE (Linux 6.3+): %s" % probe.stderr.strip()[-200:]
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason="sandbox: %s" % WHY_NOT)


def sandboxed(argv: List[str]) -> List[str]:
    return [shutil.which("setpriv") or "setpriv", "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all",
            sys.executable, "-c", MDWE_EXEC] + argv


def process_env(env: Dict[str, str]) -> Dict[str, str]:
    return dict(env, PATH=os.environ.get("PATH", "/usr/bin:/bin"), PYTHONPATH=str(SRC), HOME=os.environ.get("HOME", "/"),
                EXPOSURE_GUARD_ADMIN_PASSWORD=ADMIN_PASSWORD)


def group_status(pgid: int) -> List[Dict[str, str]]:
    """/proc/PID/status of every process in the process group (the server and its workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            status = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line)
        except (OSError, ValueError, IndexError):
            continue
        out.append({k: v.strip() for k, v in status.items()})
    return out


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    deadline = time.monotonic() + 30  # uvicorn's workers leave just after their supervisor
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)


def test_the_sandbox_refuses_writable_executable_memory() -> None:
    """The wrapper is not vacuous: under it a writable and executable mapping is refused, as
    MemoryDenyWriteExecute= refuses it, and the process has no capabilities and cannot gain privileges."""
    code = ("import mmap, sys\nstatus = open('/proc/self/status').read()\n"
            "assert 'NoNewPrivs:\\t1' in status and 'CapEff:\\t0000000000000000' in status, status\n"
            "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
            "except PermissionError:\n    sys.exit(0)\nsys.exit('a W+X mapping was allowed')\n")
    result = subprocess.run(sandboxed([sys.executable, "-c", code]), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    outside = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert outside.returncode != 0  # outside the sandbox the same program fails its first assertion


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dict[str, str]]:
    overrides = {"EXPOSURE_GUARD_SERVER_DATA": str(tmp_path / "data"), "EG_PORT": str(free_port())}
    name = "eg_deploy_sandbox_%d" % os.getpid()
    if request.param == "postgresql":
        url = pg_database(name)
        if url is None:
            pytest.skip("PostgreSQL: EXPOSURE_GUARD_TEST_PG_URL is not set (source .ci/start-postgres.sh)")
        overrides["EXPOSURE_GUARD_SERVER_DB"] = url
    yield unit_environment(SERVER_UNIT, SERVER_ENV, overrides=overrides)
    if request.param == "postgresql":
        from sqlalchemy import create_engine, text

        from exposure_guard_server.db import normalise_url

        admin = create_engine(normalise_url(os.environ["EXPOSURE_GUARD_TEST_PG_URL"]), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name))
        admin.dispose()


def test_the_server_works_in_the_units_sandbox(server_env: Dict[str, str], tmp_path: Path) -> None:
    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity
    from exposure_guard.settings import load_settings
    from tests.support.server import device_identity, make_report

    def command(*args: str) -> str:
        result = subprocess.run(sandboxed([sys.executable, "-m", "exposure_guard_server", *args]), capture_output=True,
                                text=True, timeout=180, env=process_env(server_env), stdin=subprocess.DEVNULL)
        assert result.returncode == 0, "%s: %s%s" % (args, result.stdout, result.stderr)
        return result.stdout

    command("init")
    secret = command("enroll-secret", "create", "--name", "sandbox").strip().splitlines()[-1]
    token = command("api-token", "create", "--name", "sandbox").strip().splitlines()[-1]
    argv = python_argv(exec_argv(SERVER_UNIT, server_env))
    log = tmp_path / "server.log"
    with open(str(log), "wb") as out:
        proc = subprocess.Popen(sandboxed(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=process_env(server_env), start_new_session=True)
    url = "http://127.0.0.1:%s" % server_env["EG_PORT"]
    try:
        def healthy() -> bool:
            assert proc.poll() is None, "the server exited %s:\n%s" % (proc.returncode, log.read_text()[-3000:])
            try:
                return requests.get(url + "/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for("the sandboxed server to answer", healthy)
        workers = wait_for("the unit's 2 workers", lambda: len(group_status(proc.pid)) >= 3 and group_status(proc.pid))
        for status in workers:  # the supervisor and every worker: no privileges, no capabilities
            assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0, status

        state = tmp_path / "agent-state"
        identity = DeviceIdentity(**device_identity("qnap-sandbox", hostname="sandbox-nas"))
        assert "enrolled sandbox-nas" in checkin.enroll(url, secret, identity, state)
        checkin.spool_report(state, make_report(identity.to_dict(), failing=["service.telnet"]), 100)
        delivered = checkin.deliver_spool(load_settings(None, environ={"EXPOSURE_GUARD_SERVER_URL": url}), state,
                                          deadline=60)
        assert delivered.ok and delivered.delivered == 1, delivered.summary()
        auth = {"Authorization": "Bearer " + token}
        device = requests.get(url + "/api/v1/devices/qnap-sandbox", headers=auth, timeout=30).json()
        assert device["reports"] == 1 and device["verdict"] == "at_risk", device
        page = requests.get(url + "/login", timeout=30)
        assert page.status_code == 200 and 'name="csrf"' in page.text

        # The daily backup unit's command, in the same sandbox, while the server runs (PostgreSQL: pg_dump too).
        backups = tmp_path / "backups"
        backup_env = unit_environment(BACKUP_UNIT, SERVER_ENV, overrides={
            name: server_env[name] for name in ("EXPOSURE_GUARD_SERVER_DATA", "EXPOSURE_GUARD_SERVER_DB")
            if name in server_env})
        backup_argv = [str(backups) if word == "/var/lib/exposure-guard-backup" else word
                       for word in python_argv(exec_argv(BACKUP_UNIT, backup_env))]
        result = subprocess.run(sandboxed(backup_argv), capture_output=True, text=True, timeout=300,
                                env=process_env(backup_env), stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [p.name.startswith("eg-") and p.stat().st_size > 0 for p in backups.iterdir()] == [True]
    finally:
        stop(proc)
    text = log.read_text("utf-8", "replace")
    assert "Traceback" not in text and "Permission denied" not in text, text[-3000:]


def test_the_prober_works_in_the_units_sandbox(tmp_path: Path, services: Any) -> None:
    port = free_port()
    (tmp_path / "log" / "exposure-guard-prober").mkdir(parents=True)
    env = unit_environment(PROBER_UNIT, PROBER_ENV, overrides={
        "EG_PROBER_PORT": str(port), "EG_PROBER_ARGS": "--lab-allow 127.0.0.1/32 --no-upnp"})
    argv = python_argv(exec_argv(PROBER_UNIT, env, logs=str(tmp_path / "log")))
    proc = subprocess.Popen(sandboxed(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=process_env(env), start_new_session=True)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, "the prober exited: %s" % proc.stderr.read().decode()  # type: ignore[union-attr]
            try:
                return requests.get("http://127.0.0.1:%d/healthz" % port, timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_for("the sandboxed prober to answer", healthy)
        (status,) = group_status(proc.pid)
        assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0, status
        # Its caller is loopback (the peer: no proxy header), allowed here by --lab-allow: it probes a NAS's
        # services there (tests/conftest.py `services`): HTTP, HTTPS (the certificate's hash) and an SSH banner.
        answer = requests.post("http://127.0.0.1:%d/v1/probe" % port, timeout=60, json={
            "nonce": "sandbox0001", "ports": [{"port": services.http_port}, {"port": services.https_port, "tls": True},
                                              {"port": services.ssh_port, "probe": "banner"}]})
        assert answer.status_code == 200, answer.text
        http, https, ssh = answer.json()["ports"]
        assert http["state"] == https["state"] == ssh["state"] == "open", answer.json()
        assert http["http"]["status"] in (200, 302) and len(https["tls"]["sha256"]) == 64 and ssh["banner"], answer.json()
    finally:
        stop(proc)
