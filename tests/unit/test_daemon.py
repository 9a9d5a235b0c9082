"""The scheduled daemon: one cycle, fixes per policy, event log, single instance, clean SIGTERM stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.support.paths import SRC
from tests.support.qts import tree_bytes
from tests.support.wait import DEADLINE, wait_for


def agent(*args: str, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "exposure_guard", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(SRC), **(env or {})),
                            stdin=subprocess.DEVNULL, **kw)


def test_run_once_in_report_mode_writes_last_report_and_changes_nothing(qts_tree, run_cli):
    root = qts_tree("exposed")
    original = tree_bytes(root)
    code, _, err = run_cli("run", "--root", str(root), "--once", "--offline")
    assert code == 1
    report = json.loads((root / "var/exposure-guard/last-report.json").read_text())
    assert report["schema"] == "exposure-guard/report/v1" and report["changes"] == []
    assert tree_bytes(root) == original
    assert "EXPOSED" in err or "AT RISK" in err  # no log_tool here: the event goes to stderr
    # one run from a shell says what happened to the report
    assert _.strip().endswith("check-in: none (not enrolled with a server, and [server] url is empty)"), _


def test_run_once_in_fix_mode_fixes_per_policy_and_logs_to_qts_event_log(qts_tree, run_cli, tmp_path):
    root = qts_tree("exposed")
    log = recording_log_tool(root)
    ini = tmp_path / "s.ini"
    ini.write_text("[agent]\nmode = fix\n[checks]\nservice.telnet = report\n")
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.settings import load_settings

    daemon = Daemon(QtsRoot(root, use_tools=True), load_settings(ini, environ={}), root / "var/eg", offline=True)
    assert daemon.run_once_locked() == 1  # telnet still fails (policy report)
    report = json.loads((root / "var/eg/last-report.json").read_text())
    assert [c["check_id"] for c in report["changes"]] == ["myqnapcloud.upnp-forwarding"]
    upnp = next(f for f in report["findings"] if f["id"] == "myqnapcloud.upnp-forwarding")
    assert upnp["status"] == "pass" and upnp["fixed"] is True
    assert report["agent"]["mode"] == "fix"
    events = log.read_text().splitlines()
    assert any(e.startswith("-t1 -uSystem -p127.0.0.1 -mlocalhost -a [ExposureGuard] changed /etc/config/upnpc.conf")
               for e in events), events
    assert any("-t1" in e and "AT RISK" in e for e in events)
    # second cycle: nothing left to fix, nothing new journaled
    lines = (root / "var/eg/journal.jsonl").read_text().count("\n")
    daemon.run_once_locked()
    assert (root / "var/eg/journal.jsonl").read_text().count("\n") == lines


def test_single_instance_and_clean_sigterm_stop(qts_tree, tmp_path):
    root = qts_tree("hardened")
    state = tmp_path / "state"
    first = agent("run", "--root", str(root), "--offline", "--state-dir", str(state))
    try:
        wait_for("the first cycle's last-report.json (or the agent's exit)",
                 lambda: (state / "last-report.json").exists() or first.poll() is not None)
        assert (state / "last-report.json").exists(), first.stderr.read() if first.poll() is not None else ""
        second = agent("run", "--root", str(root), "--offline", "--once", "--state-dir", str(state))
        out, err = second.communicate(timeout=DEADLINE)
        assert second.returncode == 3 and "another exposure-guard agent is running" in err
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=DEADLINE)
        assert first.returncode == 0, err
        assert "agent stopped" in err
    finally:
        if first.poll() is None:
            first.kill()
    # the lock is free again
    third = agent("run", "--root", str(root), "--offline", "--once", "--state-dir", str(state))
    third.communicate(timeout=DEADLINE)
    assert third.returncode == 0


def test_jitter_stays_within_ten_percent(qts_tree, tmp_path, monkeypatch, rng):
    from exposure_guard import daemon as daemon_module
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.settings import load_settings

    monkeypatch.setattr(daemon_module, "random", rng)  # the jitter's random choices, replayable from the seed
    daemon = Daemon(QtsRoot(qts_tree("hardened")), load_settings(None, environ={}), tmp_path)
    delays = [daemon.next_delay() for _ in range(500)]
    assert min(delays) >= 3600 and max(delays) <= 3960, rng.replay
    assert len({round(d) for d in delays}) > 100, rng.replay  # really random, not fixed


def test_notification_center_hears_only_when_the_verdict_changes(qts_tree, tmp_path):
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.settings import load_settings

    root = qts_tree("exposed")
    (root / "sbin").mkdir()
    (root / "usr/local/sbin").mkdir(parents=True)
    calls = root / "notify.calls"
    for tool, script in (("sbin/log_tool", "#!/bin/sh\nexit 0\n"),
                         ("usr/local/sbin/notify", "#!/bin/sh\nfor a in \"$@\"; do printf '%%s|' \"$a\"; done >> %s\n"
                          "echo >> %s\n" % (calls, calls))):
        (root / tool).write_text(script)
        (root / tool).chmod(0o755)
    ini = tmp_path / "s.ini"
    ini.write_text("[agent]\nmode = report\n")
    daemon = Daemon(QtsRoot(root, use_tools=True), load_settings(ini, environ={}), root / "var/eg", offline=True)
    daemon.run_once_locked()
    daemon.run_once_locked()
    lines = calls.read_text().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("send|-A|A039|-C|C001|-M|46|-l|warn|-t|3|[{0}] {1}|ExposureGuard|AT RISK: ")
    assert (root / "var/eg/last-verdict").read_text() == "AT RISK\n"
    # the verdict was different before (EXPOSED): one more notification, naming the old verdict
    (root / "var/eg/last-verdict").write_text("EXPOSED\n")
    daemon.run_once_locked()
    lines = calls.read_text().splitlines()
    assert len(lines) == 2 and lines[1].endswith("(was EXPOSED)|") and "|-l|warn|" in lines[1]
    # a damaged verdict file counts as no verdict: notified once more, and the file is repaired
    (root / "var/eg/last-verdict").write_text("<garbage>\n")
    daemon.run_once_locked()
    assert len(calls.read_text().splitlines()) == 3
    assert (root / "var/eg/last-verdict").read_text() == "AT RISK\n"


def test_without_notify_the_event_log_still_has_the_verdict(qts_tree, tmp_path):
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.settings import load_settings

    root = qts_tree("exposed")
    log = recording_log_tool(root)
    Daemon(QtsRoot(root, use_tools=True), load_settings(None, environ={}), root / "var/eg", offline=True).run_once_locked()
    assert any("AT RISK" in line for line in log.read_text().splitlines())
    assert (root / "var/eg/last-verdict").read_text() == "AT RISK\n"


def test_a_changed_settings_file_is_used_from_the_next_cycle_and_a_broken_one_ignored(qts_tree, tmp_path):
    from exposure_guard.daemon import Daemon
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.settings import load_settings

    root = qts_tree("exposed")
    log = recording_log_tool(root)
    ini = tmp_path / "s.ini"
    ini.write_text("[agent]\nmode = report\n")
    daemon = Daemon(QtsRoot(root, use_tools=True), load_settings(ini, environ={}), root / "var/eg", offline=True)
    daemon.run_once_locked()
    assert not (root / "var/eg/journal.jsonl").exists()
    ini.write_text("[agent]\nmode = fix\ninterval = 30m\n")  # what the page writes
    daemon.run_once_locked()
    assert daemon.settings.mode == "fix" and daemon.settings.get("agent", "interval") == 1800
    assert '"event": "applied"' in (root / "var/eg/journal.jsonl").read_text()
    assert any("settings reloaded (every 1800s, mode fix)" in line for line in log.read_text().splitlines())
    ini.write_text("[agent]\nmode = sometimes\n")
    daemon.run_once_locked()
    assert daemon.settings.mode == "fix"
    assert any("the settings file changed but cannot be used" in line and "sometimes" in line
               for line in log.read_text().splitlines())


def recording_log_tool(root):
    """A /sbin/log_tool double in the tree that appends its arguments to ROOT/events.log; returns that path."""
    (root / "sbin").mkdir(exist_ok=True)
    log = root / "events.log"
    (root / "sbin/log_tool").write_text("#!/bin/sh\necho \"$@\" >> %s\n" % log)
    (root / "sbin/log_tool").chmod(0o755)
    return log
