"""integrity.*: persistence in qpkg.conf, redirected updates, scheduled tasks from shares or hidden
folders, ransomware traces — on trees shaped like real boxes (trailing-space section names, QTS's own
crontab lines), and the scan stays inside its bounds and inside the checked root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import pytest

from exposure_guard.checks import integrity
from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.qts.root import QtsRoot

QTS_CRON = ("# m h dom m dow cysystem\n0 4 * * * /sbin/hwclock -s\n9 9,21 * * * /sbin/notify_update --nc\n"
            "4 3 * * 3 /etc/init.d/backup_conf.sh\n"
            "0 1 * * * /share/CACHEDEV1_DATA/.qpkg/MalwareRemover/MalwareRemover.sh scan #_QSC_:MalwareRemover:1\n")
PACKAGES = ("[MalwareRemover]\nName = MalwareRemover\nClass = null\nStatus = complete\nVersion = 6.6.3\n"
            "Shell = /share/CACHEDEV1_DATA/.qpkg/MalwareRemover/MalwareRemover.sh\nEnable = TRUE\n"
            "Install_Path = /share/CACHEDEV1_DATA/.qpkg/MalwareRemover\nQPKG_File = MalwareRemover.qpkg\n"
            "[helpdesk] \nName = helpdesk\nVersion = 3.1.2\nShell = /share/CACHEDEV1_DATA/.qpkg/helpdesk/helpdesk.sh\n"
            "Install_Path = /share/CACHEDEV1_DATA/.qpkg/helpdesk\nEnable = TRUE\n")


def make(root: Path, files: Dict[str, str]) -> QtsRoot:
    base = {"etc/config/uLinux.conf": "[System]\nVersion = 5.1.4\nNumber = 2596\n", "etc/config/crontab": QTS_CRON,
            "etc/config/qpkg.conf": PACKAGES, "share/CACHEDEV1_DATA/Public/report.docx": "x"}
    base.update(files)
    for rel, text in base.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return QtsRoot(root)


def findings(root: QtsRoot):
    report, _ = run_checks(CheckContext(root, offline=True), [c for c in integrity_ids()])
    return {f.id: f for f in report.findings}


def integrity_ids():
    return ["integrity.qpkg-entries", "integrity.update-sources", "integrity.crontab", "integrity.ransomware"]


def test_a_clean_box_passes_all(tmp_path: Path):
    found = findings(make(tmp_path, {}))
    assert {k: f.status for k, f in found.items()} == {k: "pass" for k in integrity_ids()}, found
    assert found["integrity.qpkg-entries"].evidence["sections"] == 2  # "[helpdesk] " read like any section


def test_hand_made_qpkg_section_and_shell_outside_qpkg(tmp_path: Path):
    evil = PACKAGES + ("[autorun]\nShell = /share/CACHEDEV1_DATA/Public/.x/run.sh\nEnable = TRUE\n"
                       "[Notes]\nName = Notes\nVersion = 1\nShell = /tmp/n.sh\n"
                       "Install_Path = /share/CACHEDEV1_DATA/.qpkg/Notes\n")
    f = findings(make(tmp_path, {"etc/config/qpkg.conf": evil}))["integrity.qpkg-entries"]
    assert f.status == "fail" and f.severity == "high"
    assert {s["section"] for s in f.evidence["found"]} == {"autorun", "Notes"}
    assert "[autorun]" in f.summary


def test_redirected_updates_and_blocked_hosts(tmp_path: Path):
    ulinux = "[System]\nVersion = 5.1.4\nNumber = 2596\nLive Update XML = http://0.0.0.0/update.xml\n"
    f = findings(make(tmp_path, {"etc/config/uLinux.conf": ulinux}))["integrity.update-sources"]
    assert f.status == "fail" and "Live Update XML" in f.summary
    ok = "[System]\nQPKG CENTER XML = https://download.qnap.com/QPKG/qpkgcenter_eng.xml\n"
    assert findings(make(tmp_path / "b", {"etc/config/uLinux.conf": ok}))["integrity.update-sources"].status == "pass"
    hosts = "127.0.0.1 localhost\n0.0.0.0 update.qnap.com  # blocked\n"
    f = findings(make(tmp_path / "c", {"etc/hosts": hosts}))["integrity.update-sources"]
    assert f.status == "fail" and f.evidence["hosts_entries"] == ["0.0.0.0 update.qnap.com"]
    fake = "[System]\nLive Update XML = https://update.qnap.com.evil.example/x.xml\n"  # lookalike host
    assert findings(make(tmp_path / "d", {"etc/config/uLinux.conf": fake}))["integrity.update-sources"].status == "fail"


@pytest.mark.parametrize("line,flagged", [
    ("*/5 * * * * /share/CACHEDEV1_DATA/Public/.cache/k.sh", True),  # hidden folder in a share
    ("0 3 * * * /share/CACHEDEV1_DATA/.qpkg/.liveupdate/liveupdate.sh", True),  # hidden .qpkg folder
    ("0 3 * * * sh /share/Public/backup.sh >/dev/null", True),  # a share folder
    ("0 3 * * * /share/CACHEDEV1_DATA/.qpkg/Gone/run.sh", True),  # a .qpkg folder of no package
    ("0 3 * * * /share/CACHEDEV1_DATA/.qpkg/helpdesk/cron.sh", False),  # an installed package's own
    ("0 3 * * * /etc/init.d/backup_conf.sh", False),
])
def test_crontab_lines(tmp_path: Path, line: str, flagged: bool):
    f = findings(make(tmp_path, {"etc/config/crontab": QTS_CRON + line + "\n"}))["integrity.crontab"]
    assert (f.status == "fail") is flagged, f.summary
    if flagged:
        assert f.evidence["found"][0]["line"] == line


def test_crontab_missing_is_unknown(tmp_path: Path):
    root = make(tmp_path, {})
    (tmp_path / "etc/config/crontab").unlink()
    assert findings(root)["integrity.crontab"].status == "unknown"


@pytest.mark.parametrize("rel,campaign", [
    ("share/CACHEDEV1_DATA/Public/!CHECKMATE_DECRYPTION_README", "Checkmate"),
    ("share/CACHEDEV1_DATA/Public/docs/!!!READ_ME.txt", "Qlocker"),
    ("share/CACHEDEV1_DATA/homes/jane/photo.jpg.deadbolt", "DeadBolt"),
    ("share/CACHEDEV1_DATA/Public/a.xlsx.encrypt", "eCh0raix"),
    ("home/httpd/index.html", "DeadBolt"),
])
def test_ransomware_traces(tmp_path: Path, rel: str, campaign: str):
    text = "<h1>WARNING: Your files have been locked by DeadBolt</h1>" if rel.endswith("index.html") else "x"
    f = findings(make(tmp_path, {rel: text}))["integrity.ransomware"]
    assert f.status == "fail" and f.severity == "critical" and campaign in f.summary


def test_ransomware_scan_is_bounded_and_stays_in_the_root(tmp_path: Path, monkeypatch):
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "deep/!!!READ_ME.txt").write_text("x")
    root = make(tmp_path / "nas", {"share/CACHEDEV1_DATA/Public/a/b/c/!!!READ_ME.txt": "x"})  # below the depth
    os.symlink(str(outside), str(tmp_path / "nas/share/Escape"))  # a link out of the checked root
    os.symlink("/", str(tmp_path / "nas/share/CACHEDEV1_DATA/Public/root"))  # absolute: stays in the root
    f = findings(root)["integrity.ransomware"]
    assert f.status == "pass", f.evidence
    assert "/share/Escape" not in f.evidence["shares"]
    for n in range(50):
        (tmp_path / ("nas/share/CACHEDEV1_DATA/Public/f%d" % n)).write_text("x")
    monkeypatch.setattr(integrity, "SCAN_ENTRIES", 10)
    f = findings(root)["integrity.ransomware"]
    assert f.evidence["complete"] is False and "entry limit" in f.summary


def test_no_share_folder_is_unknown(tmp_path: Path):
    root = make(tmp_path, {})
    import shutil

    shutil.rmtree(str(tmp_path / "share"))
    assert findings(root)["integrity.ransomware"].status == "unknown"
