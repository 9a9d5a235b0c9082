"""Fault test: the real agent code sends 500 reports while the real server (uvicorn subprocess on
127.0.0.1) is stopped and restarted 20 times (SIGTERM or SIGKILL) and the agent itself is SIGKILLed at
random points. Every report must be stored exactly once: the right count and exactly the right ids."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.support import fault_agent
from tests.support.paths import REPO, SRC
from tests.support.serverproc import ServerProcess, cli, free_port

from exposure_guard_server.db import make_engine

TOTAL = 500
RESTARTS = 20


def _start_agent(state: Path, url: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(REPO), env.get("PYTHONPATH", "")])
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "tests.support.fault_agent", str(state), url, str(TOTAL), "0.06"],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))


@pytest.mark.slow
def test_every_report_stored_exactly_once_across_restarts_and_kills(db_url: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("EG_FAULT_SEED", "0")) or random.randrange(1 << 30)
    print("EG_FAULT_SEED=%d (set it to replay this run's restarts and kills)" % seed)
    rng = random.Random(seed)
    cli("init", "--db", db_url)
    secret = cli("enroll-secret", "create", "--db", db_url).stdout.strip().splitlines()[-1]
    server = ServerProcess(db_url, free_port(), tmp_path / "server.log", workers=1)
    server.start()
    state = tmp_path / "agent"
    from exposure_guard import checkin
    from exposure_guard.qts.identity import DeviceIdentity

    checkin.enroll(server.url, secret, DeviceIdentity(**fault_agent.DEVICE), state)
    agent_log = tmp_path / "agent.log"
    agent = _start_agent(state, server.url, agent_log)
    agent_kills = 0
    try:
        for restart in range(RESTARTS):
            up_until = time.monotonic() + rng.uniform(0.6, 1.8)
            while time.monotonic() < up_until:
                time.sleep(rng.uniform(0.2, 0.6))
                if agent.poll() is None and rng.random() < 0.5:
                    agent.send_signal(signal.SIGKILL)
                    agent.wait()
                    agent_kills += 1
                if agent.poll() is not None:
                    assert agent.returncode in (0, -signal.SIGKILL), agent_log.read_text()
                    agent = _start_agent(state, server.url, agent_log)
            server.stop(signal.SIGKILL if restart % 2 else signal.SIGTERM)
            time.sleep(rng.uniform(0.2, 1.0))
            server.start(wait=False)
            server.wait_ready()
        # Let the agent finish (restart it if it was killed last).
        deadline = time.monotonic() + 180
        while True:
            if agent.poll() is not None:
                if agent.returncode == 0:
                    break
                assert agent.returncode == -signal.SIGKILL, agent_log.read_text()
                agent = _start_agent(state, server.url, agent_log)
            assert time.monotonic() < deadline, "agent did not finish; log:\n" + agent_log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        server.stop()
    replay = "EG_FAULT_SEED=%d" % seed
    assert agent_kills >= 5, replay
    assert (state / "generated").read_text().strip() == str(TOTAL)
    assert checkin.spooled_files(state) == []
    assert not (state / "spool" / "rejected").exists()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ids = conn.execute(text("SELECT report_id FROM reports")).scalars().all()
            device_reports = conn.execute(text("SELECT report_count FROM devices WHERE device_id = 'qnap-fault'")).scalar()
            latest = conn.execute(text(
                "SELECT r.report_id FROM devices d JOIN reports r ON r.id = d.last_report_pk")).scalar()
    finally:
        engine.dispose()
    expected = {fault_agent.report_id(i) for i in range(TOTAL)}
    assert len(ids) == TOTAL and len(set(ids)) == TOTAL, replay
    assert set(ids) == expected, replay
    assert device_reports == TOTAL, replay
    assert latest == fault_agent.report_id(TOTAL - 1), replay
