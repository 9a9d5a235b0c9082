"""Local checks against fake QTS trees laid out like a NAS."""

from __future__ import annotations

from pathlib import Path

from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.qts.root import QtsRoot
from tests.support.paths import QTS_TREES

LOCAL_IDS = [
    "myqnapcloud.upnp-forwarding", "myqnapcloud.published-services", "myqnapcloud.ddns", "admin.default-ports",
    "admin.https", "service.telnet", "service.ssh", "account.default-admin", "system.autorun",
    "upnp.nas-discovery", "firmware.version",
]


def statuses(root: Path, offline: bool = True):
    report, _ = run_checks(CheckContext(QtsRoot(root), offline=offline))
    return {f.id: f for f in report.findings}, report


def test_exposed_box_fails_what_the_advisory_warns_about():
    found, report = statuses(QTS_TREES / "exposed")
    for check_id in LOCAL_IDS:
        assert found[check_id].status == "fail", (check_id, found[check_id].summary)
    assert found["myqnapcloud.upnp-forwarding"].evidence["value"] == "TRUE"
    assert found["myqnapcloud.upnp-forwarding"].evidence["file"] == "/etc/config/upnpc.conf"
    assert found["myqnapcloud.ddns"].severity == "medium"  # worse together with forwarding
    assert found["myqnapcloud.published-services"].severity == "high"
    assert {p["router_port"] for p in found["myqnapcloud.published-services"].evidence["published"]} == {8080, 443}
    assert found["admin.default-ports"].evidence["http"]["listening"] is True
    assert found["firmware.version"].severity == "critical"
    assert "QSA-22-02" in [m["id"] for m in found["firmware.version"].evidence["missing_fixes"]]  # DeadBolt
    assert report.verdict() == "AT RISK"  # offline: exposure itself is not verified
    for check_id in ("router.upnp-mappings", "reachability.admin"):
        assert found[check_id].status == "skipped"


def test_hardened_box_passes_everything():
    found, report = statuses(QTS_TREES / "hardened")
    for check_id in LOCAL_IDS:
        assert found[check_id].status == "pass", (check_id, found[check_id].summary)
    assert report.verdict() == "OK"


def test_factory_default_box():
    found, _ = statuses(QTS_TREES / "factory-default")
    expect = {"myqnapcloud.upnp-forwarding": "pass", "admin.default-ports": "fail", "admin.https": "fail",
              "service.telnet": "pass", "service.ssh": "pass", "account.default-admin": "fail",
              "myqnapcloud.ddns": "pass", "system.autorun": "pass"}
    for check_id, status in expect.items():
        assert found[check_id].status == status, (check_id, found[check_id].summary)
    # upnpc.conf is absent on a factory box: QTS itself then uses the default FALSE
    upnp = found["myqnapcloud.upnp-forwarding"].evidence
    assert upnp["default_used"] == "FALSE" and upnp["note"].startswith("file absent")


def test_nasty_config_is_read_like_getcfg():
    found, _ = statuses(QTS_TREES / "nasty")
    assert found["admin.https"].status == "fail" and found["admin.https"].severity == "high"  # enable=0 in [STUNNEL]
    assert found["service.ssh"].status == "fail" and "2222" in found["service.ssh"].summary
    assert found["service.telnet"].status == "fail"  # "telnet enable=Yes"
    assert found["admin.default-ports"].evidence["http"]["value"] == "8080"  # first duplicate wins
    assert found["system.autorun"].status == "pass"  # "  [Misc]  " then Autorun=no
    assert found["myqnapcloud.upnp-forwarding"].status == "pass"  # empty upnpc.conf
    assert found["account.default-admin"].status == "unknown"  # no /etc/shadow


def test_missing_uLinux_conf_gives_unknown_with_reason_never_a_crash(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    found, report = statuses(tmp_path)
    assert found["admin.default-ports"].status == "unknown"
    assert "/etc/config/uLinux.conf does not exist" in found["admin.default-ports"].summary
    assert all(f.status != "error" for f in report.findings), [(f.id, f.summary) for f in report.findings
                                                                if f.status == "error"]


def test_unreadable_file_gives_unknown(tmp_path: Path):
    (tmp_path / "etc/config/uLinux.conf").mkdir(parents=True)  # a directory where the file should be
    found, _ = statuses(tmp_path)
    assert found["admin.https"].status == "unknown"
    assert "cannot be read" in found["admin.https"].summary


def test_empty_files(tmp_path: Path):
    (tmp_path / "etc/config").mkdir(parents=True)
    for name in ("uLinux.conf", "upnpc.conf", "qnapddns.conf"):
        (tmp_path / "etc/config" / name).write_bytes(b"")
    found, _ = statuses(tmp_path)
    # QTS defaults apply: admin on 8080/443, HTTPS on but not forced
    assert found["admin.default-ports"].status == "fail"
    assert found["admin.https"].severity == "medium"
    assert found["firmware.version"].status == "unknown"


def test_listener_contradicting_config_is_reported(qts_tree):
    root = qts_tree("hardened")
    tcp = root / "proc/net/tcp"
    # something listens on 13131 (QTS's Telnet port) although the config says Telnet is off
    tcp.write_text(tcp.read_text() + "   9: 00000000:334B 00000000:0000 0A 00000000:00000000 00:00000000 00000000"
                   "     0        0 1 1 0000000000000000 100 0 0 10 0\n")
    found, _ = statuses(root)
    assert found["service.telnet"].status == "fail"
    assert "although the config says off" in found["service.telnet"].summary


def test_running_upnpcd_fails_even_when_config_says_off(qts_tree):
    root = qts_tree("hardened")
    (root / "proc/4242").mkdir()
    (root / "proc/4242/comm").write_text("upnpcd\n")
    found, _ = statuses(root)
    assert found["myqnapcloud.upnp-forwarding"].status == "fail"
    assert "upnpcd runs" in found["myqnapcloud.upnp-forwarding"].summary


def test_secrets_are_never_read_out(qts_tree):
    root = qts_tree("exposed")
    (root / "etc/config/qid.conf").write_text("[QNAP ID Service]\nAUTH TOKEN = SECRET-TOKEN-123\nSTATUS = 3\n")
    _found, report = statuses(root)
    text = report.to_json()
    assert "SECRET-TOKEN-123" not in text
    assert "$1$demoDEMO" not in text  # the admin hash in /etc/shadow


def test_a_broken_check_is_an_error_not_a_crash(monkeypatch):
    from exposure_guard.checks import registry

    check = registry.REGISTRY.get("system.autorun")

    def boom(ctx):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(registry.REGISTRY, "_checks", dict(registry.REGISTRY._checks))
    registry.REGISTRY.replace(check.replace(evaluate=boom))
    found, _ = statuses(QTS_TREES / "exposed")
    assert found["system.autorun"].status == "error"
    assert "kaboom" in found["system.autorun"].summary
    assert found["service.telnet"].status == "fail"




def test_an_empty_admin_password_field_is_not_a_locked_account(tmp_path):
    import shutil

    root = tmp_path / "nas"
    shutil.copytree(str(QTS_TREES / "hardened"), str(root), symlinks=True)
    (root / "etc/shadow").write_text("admin::19000:0:99999:7:::\n")
    found, _ = statuses(root)
    admin = found["account.default-admin"]
    assert admin.status == "fail" and admin.severity == "critical" and admin.evidence["empty_password"] is True
