"""One fixture tree per QTS firmware generation (tests/fixtures/qts/gen-*), each written the way real boxes
write their files, and the verdict every local check must give on it.

The expected verdicts are what the files mean according to docs/qts-facts.md, not what the code happens
to print. The firmware verdicts were computed by hand from data/firmware-advisories.json with the rules in
the docstring of exposure_guard/facts/firmware.py (affected branch, fixed release per branch, longest
prefix wins, build dates; a fix written without a release number is decided by the build date alone).
Where the code disagrees with the facts, the cell is marked xfail(strict=True) with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest

from exposure_guard.checks import all_checks
from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.facts.firmware import judge, load_table, parse_release
from exposure_guard.qts.config import ConfigDocument
from exposure_guard.qts.root import QtsRoot
from exposure_guard.report import Finding, Report
from tests.support.paths import QTS_TREES

TREES = ("gen-4.2", "gen-4.3", "gen-4.5", "gen-5.0", "gen-5.2", "gen-hero", "gen-compromised")
LOCAL_CHECKS = [c.id for c in all_checks() if not c.network]
NETWORK_CHECKS = [c.id for c in all_checks() if c.network]

P, F, U = "pass", "fail", "unknown"

# ---------------------------------------------------------------- the verdict table: tree -> check -> status
EXPECTED: Dict[str, Dict[str, str]] = {
    # QTS 4.2.6 build 20190322, TS-459 Pro II: ARC off, a legacy mycloudnas.com DDNS name, 8080/443 not forced,
    # SSH on 22, admin enabled, no [Misc] Autorun key (no switch before 4.3.0) and an autorun.sh on the flash.
    "gen-4.2": {
        "myqnapcloud.upnp-forwarding": P, "myqnapcloud.published-services": P, "myqnapcloud.ddns": F,
        "admin.default-ports": F, "admin.https": F, "service.telnet": P, "service.ssh": F,
        "account.default-admin": F, "system.autorun": F, "upnp.nas-discovery": F, "firmware.version": F,
        "integrity.qpkg-entries": P, "integrity.update-sources": P, "integrity.crontab": P,
        "integrity.ransomware": P,
        # SMB on with no smb.conf floor on QTS 4.2 (Samba < 4.11: SMB1 allowed); no QuFirewall; Helpdesk 1.1.3 < 3.0.3
        # (QSA-20-08, exploited); Malware Remover 2.2.1 is older than the only affected line (4.x): undecided.
        "service.smb": F, "service.afp": P, "service.ftp": P, "service.webserver": P, "service.snmp": P,
        "service.access-protection": P, "service.firewall": F, "apps.exposed": F,
        "containers.published": P,
    },
    # QTS 4.3.6.1620 build 20210322, TS-x51: ARC on (upnpcd runs), admin HTTP and Web Server forwarded, DDNS name,
    # HTTPS off, Telnet on, Autorun = FALSE (the autorun.sh left on the flash does not run), QNAP's 4.3 system apps
    # in /mnt/HDA_ROOT/update_pkg and /mnt/ext/opt as the real qpkg.conf of Yannik/qnap-letsencrypt #54 has them.
    "gen-4.3": {
        "myqnapcloud.upnp-forwarding": F, "myqnapcloud.published-services": F, "myqnapcloud.ddns": F,
        "admin.default-ports": F, "admin.https": F, "service.telnet": F, "service.ssh": P,
        "account.default-admin": F, "system.autorun": P, "upnp.nas-discovery": F, "firmware.version": F,
        "integrity.qpkg-entries": P, "integrity.update-sources": P, "integrity.crontab": P,
        "integrity.ransomware": P,
        # SMB1 by Samba's default; Web Server on; no QuFirewall; Helpdesk 1.2.2 < 3.0.3 (QSA-20-08).
        "service.smb": F, "service.afp": P, "service.ftp": P, "service.webserver": F, "service.snmp": P,
        "service.access-protection": P, "service.firewall": F, "apps.exposed": F,
        "containers.published": P,
    },
    # QTS 4.5.4.1892 build 20211223, TS-453Be: ARC off with leftover ExtPort/ExtSSLPort (history), a DDNS name,
    # 8080/443 with HTTPS forced, SSH on 2222, admin locked, the Bonjour QNAP record on.
    "gen-4.5": {
        "myqnapcloud.upnp-forwarding": P, "myqnapcloud.published-services": P, "myqnapcloud.ddns": F,
        "admin.default-ports": F, "admin.https": P, "service.telnet": P, "service.ssh": F,
        "account.default-admin": P, "system.autorun": P, "upnp.nas-discovery": F, "firmware.version": F,
        "integrity.qpkg-entries": P, "integrity.update-sources": P, "integrity.crontab": P,
        "integrity.ransomware": P,
        # no smb.conf on 4.5 (Samba version unknown): undecided; no QuFirewall; HBS 3 3.0.210412 < 3.0.210506 (QSA-21-19).
        "service.smb": U, "service.afp": P, "service.ftp": P, "service.webserver": P, "service.snmp": P,
        "service.access-protection": P, "service.firewall": F, "apps.exposed": F,
        "containers.published": P,
    },
    # QTS 5.0.1.2376 build 20230421, TS-873A: the myQNAPcloud name only in qid.conf, non-default ports but HTTPS not
    # forced, SSH on 22, admin enabled, Bonjour SMB only. Firmware: see FIRMWARE and the xfail below.
    "gen-5.0": {
        "myqnapcloud.upnp-forwarding": P, "myqnapcloud.published-services": P, "myqnapcloud.ddns": F,
        "admin.default-ports": P, "admin.https": F, "service.telnet": P, "service.ssh": F,
        "account.default-admin": F, "system.autorun": P, "upnp.nas-discovery": F, "firmware.version": U,
        "integrity.qpkg-entries": P, "integrity.update-sources": P, "integrity.crontab": P,
        "integrity.ransomware": P,
        # Samba floor undecided; no QuFirewall; Malware Remover 5.0.1 and Helpdesk 3.1.5 are past every fix.
        "service.smb": U, "service.afp": P, "service.ftp": P, "service.webserver": P, "service.snmp": P,
        "service.access-protection": P, "service.firewall": F, "apps.exposed": P,
        "containers.published": P,
    },
    # QTS 5.2.7.3297 build 20251024, TS-264: hardened and patched past every fix in the table.
    "gen-5.2": {check_id: P for check_id in LOCAL_CHECKS},
    # QuTS hero h5.1.8.2823 build 20240712, TS-h973AX: 8080/443 forced, SSH on, admin enabled, Bonjour defaults.
    "gen-hero": {
        "myqnapcloud.upnp-forwarding": P, "myqnapcloud.published-services": P, "myqnapcloud.ddns": P,
        "admin.default-ports": F, "admin.https": P, "service.telnet": P, "service.ssh": F,
        "account.default-admin": F, "system.autorun": P, "upnp.nas-discovery": F, "firmware.version": F,
        "integrity.qpkg-entries": P, "integrity.update-sources": P, "integrity.crontab": P,
        "integrity.ransomware": P,
        # Samba floor undecided; no QuFirewall; HBS 3 25.1.1 < 25.1.1.673 (QSA-24-41).
        "service.smb": U, "service.afp": P, "service.ftp": P, "service.webserver": P, "service.snmp": P,
        "service.access-protection": P, "service.firewall": F, "apps.exposed": F,
        "containers.published": P,
    },
    # QTS 4.4.2.1270 build 20200410, TS-251B, QSnatch-era persistence on an exposed box: everything fails.
    # The other doors of this box are shut (AFP, FTP, Web Server, SNMP off; IP access protection on); SMB1 by
    # Samba's default on 4.4; no QuFirewall; Helpdesk 2.0.7 < 3.0.3 (QSA-20-08).
    "gen-compromised": dict({check_id: F for check_id in LOCAL_CHECKS}, **{
        "service.afp": P, "service.ftp": P, "service.webserver": P, "service.snmp": P,
        "service.access-protection": P, "containers.published": P}),
}

# Cells where the code disagreed with docs/qts-facts.md when these trees were written; all three were fixed
# (QNAP's own app folders, the disputed QSA-23-57 rows, ARC history in the DDNS finding). Keep the mechanism:
# a new disagreement goes here with its reason, never into EXPECTED.
XFAIL: Dict[Tuple[str, str], str] = {}

# ---------------------------------------------------------------- firmware, computed by hand from the table
NA, FX, MS, UN = "not-affected", "fixed", "missing", "unknown"
ADVISORY_IDS = ("QSA-20-01", "NAS-201911-25", "QSA-21-05", "QSA-22-02", "QSA-23-01", "QSA-23-31", "QSA-23-35",
                "QSA-23-57", "QSA-24-09", "QSA-24-23", "QSA-24-49", "QSA-25-56")


def _states(*states: str) -> Dict[str, str]:
    assert len(states) == len(ADVISORY_IDS)
    return dict(zip(ADVISORY_IDS, states))


# tree: (device.firmware, device.build, per-advisory state, firmware finding severity or None when it passes)
FIRMWARE: Dict[str, Tuple[str, str, Dict[str, str], str]] = {
    # 4.2.6: QSA-20-01 (4.2.6 b20200421), QSA-21-05 (4.2.6 b20210327), QSA-23-35 (branch 4.2: 4.2.6 b20230621),
    # QSA-23-57 (branch 4.2: 4.2.6 b20240131) are fixes written without a release number: build 20190322 predates
    # every one of them. NAS-201911-25 names 4.4.0/4.4.1/4.3.6 only; the others name 4.5+ or 5.x.
    "gen-4.2": ("4.2.6.0999", "20190322", _states(MS, NA, MS, NA, NA, NA, MS, MS, NA, NA, NA, NA), "critical"),
    # 4.3.6.1620 b20210322: on or after 4.3.6.1263 (QSA-20-01), 4.3.6 b20190919 (NAS-201911-25, build only) and
    # exactly the QSA-21-05 fix; older than 4.3.6.2441 (QSA-23-35) and 4.3.6.2665 (QSA-23-57: the 4.3.6 row wins
    # over the 4.3 row by the longest prefix).
    "gen-4.3": ("4.3.6.1620", "20210322", _states(FX, FX, FX, NA, NA, NA, MS, MS, NA, NA, NA, NA), "critical"),
    # 4.5.4.1892 b20211223: exactly the QSA-22-02 fix; older than 4.5.4.2374 (QSA-23-31) and 4.5.4.2627 (QSA-23-57,
    # QSA-24-09). QSA-21-05 names 4.5.1 and 4.5.2 only.
    "gen-4.5": ("4.5.4.1892", "20211223", _states(NA, NA, NA, FX, NA, MS, NA, MS, MS, NA, NA, NA), "critical"),
    # 5.0.1.2376 b20230421: later than 5.0.1.2234 b20221201 (QSA-23-01) and exactly the QSA-23-31 fix. QSA-23-57's
    # 5.0 row is closed only by 5.1.5.2645 in QNAP's record, but the table marks 5.0.1 from 5.0.1.2145 on as
    # disputed (Tenable counts it fixed): undecided, never "missing". QSA-22-02 names 5.0.0 only; QSA-24-49 says
    # 5.0.x is unaffected.
    "gen-5.0": ("5.0.1.2376", "20230421", _states(NA, NA, NA, NA, FX, FX, NA, UN, NA, NA, NA, NA), ""),
    # 5.2.7.3297 b20251024: only QSA-24-49 (5.2.2.2950 b20241114) and QSA-25-56 (5.2.7.3256 b20250913) name 5.2.
    "gen-5.2": ("5.2.7.3297", "20251024", _states(NA, NA, NA, NA, NA, NA, NA, NA, NA, NA, FX, FX), ""),
    # h5.1.8.2823 b20240712, judged by the hero rows only: later than h5.1.5.2647 (QSA-23-57), h5.1.3.2578
    # (QSA-24-09), h5.1.7.2770 b20240520 (QSA-24-23); older than h5.1.9.2954 (QSA-24-49). QSA-20-01, NAS-201911-25,
    # QSA-23-35 and QSA-25-56 have no hero rows; QSA-21-05/22-02/23-01/23-31 name other hero branches.
    "gen-hero": ("h5.1.8.2823", "20240712", _states(NA, NA, NA, NA, NA, NA, NA, FX, FX, FX, MS, NA), "high"),
    # 4.4.2.1270 b20200410: exactly the QSA-20-01 fix; QSA-23-57's 4.4 row is closed by 4.5.4.2627.
    "gen-compromised": ("4.4.2.1270", "20200410", _states(FX, NA, NA, NA, NA, NA, NA, MS, NA, NA, NA, NA),
                        "medium"),
}

# display model (platform.conf DISPLAY_NAME, else [System] Model as it is) and model family ([System] Model)
MODELS = {
    "gen-4.2": ("TS-459PROII", "TS-459PROII"), "gen-4.3": ("TS-X51", "TS-X51"), "gen-4.5": ("TS-453Be", "TS-X53B"),
    "gen-5.0": ("TS-873A", "TS-X73A"), "gen-5.2": ("TS-264", "TS-X64"), "gen-hero": ("TS-h973AX", "TS-X73AX"),
    "gen-compromised": ("TS-251B", "TS-X51B"),
}

Run = Tuple[Path, Report, Dict[str, Finding]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """Each tree copied to tmp (links kept) and checked offline once per module."""
    done: Dict[str, Run] = {}

    def get(tree: str) -> Run:
        if tree not in done:
            target = tmp_path_factory.mktemp("gen") / tree
            shutil.copytree(str(QTS_TREES / tree), str(target), symlinks=True)
            report, _ = run_checks(CheckContext(QtsRoot(target), offline=True))
            done[tree] = (target, report, {f.id: f for f in report.findings})
        return done[tree]

    return get


def _cells():
    for tree in TREES:
        for check_id in LOCAL_CHECKS:
            reason = XFAIL.get((tree, check_id))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(tree, check_id, marks=marks, id="%s:%s" % (tree, check_id))


def test_every_tree_has_a_verdict_for_every_local_check():
    assert len(LOCAL_CHECKS) == 24 and NETWORK_CHECKS, (LOCAL_CHECKS, NETWORK_CHECKS)
    for tree in TREES:
        assert sorted(EXPECTED[tree]) == sorted(LOCAL_CHECKS), tree
        assert (QTS_TREES / tree / "etc/config/uLinux.conf").is_file(), tree
    assert set(XFAIL) <= {(t, c) for t in TREES for c in LOCAL_CHECKS}


@pytest.mark.parametrize("tree,check_id", list(_cells()))
def test_verdict(run, tree: str, check_id: str):
    _root, _report, found = run(tree)
    finding = found[check_id]
    assert finding.status == EXPECTED[tree][check_id], (finding.summary, finding.evidence)


@pytest.mark.parametrize("tree", TREES)
def test_network_checks_are_skipped_offline_and_nothing_errors(run, tree: str):
    _root, report, found = run(tree)
    assert [f.id for f in report.findings if f.status == "error"] == []
    for check_id in NETWORK_CHECKS:
        assert found[check_id].status == "skipped", check_id


# ---------------------------------------------------------------- how the trees are written
@pytest.mark.parametrize("tree", TREES)
def test_tree_is_written_like_a_real_box(tree: str):
    root = QTS_TREES / tree
    runtime = (root / "etc/config/uLinux.conf").read_bytes()
    factory = (root / "etc/default_config/uLinux.conf").read_bytes()
    doc, fdoc = ConfigDocument(runtime), ConfigDocument(factory)
    for d in (doc, fdoc):
        version = d.get("System", "Version") or ""
        assert version.lstrip("h").count(".") == 2, version  # three parts; the release number is separate
        assert (d.get("System", "Number") or "").isdigit() and len(d.get("System", "Build Number") or "") == 8
        assert "end_flag" in d.sections
    assert len(fdoc.sections) < len(doc.sections)  # the factory copy has fewer sections
    assert fdoc.find("Stunnel", "Enable") is None and fdoc.find("Bonjour Service", "Web") is None
    assert factory.rstrip().endswith(b"[END_FLAG]")
    lines = runtime.decode().splitlines()
    assert any("=" in x and " = " not in x for x in lines)  # Key=Value
    assert any(" = " in x for x in lines)  # Key = Value
    assert any(x.endswith("= ") or (x.endswith(" ") and "=" in x) for x in lines)  # trailing spaces
    qpkg = (root / "etc/config/qpkg.conf").read_text()
    assert "\n[helpdesk] \n" in "\n" + qpkg and "Status = complete" in qpkg
    crontab = (root / "etc/config/crontab").read_text()
    assert "/sbin/notify_update --nc" in crontab and "#_QSC_:MalwareRemover:" in crontab
    assert (root / "share/CACHEDEV1_DATA/Public").is_dir() and (root / "share/Public").is_symlink()
    display = ConfigDocument((root / "etc/platform.conf").read_bytes()).find_any("DISPLAY_NAME")
    assert (display is None) == (tree in ("gen-4.2", "gen-4.3"))  # only newer boxes name the model there
    assert (doc.find("Misc", "Autorun") is None) == (tree == "gen-4.2")  # the switch exists from QTS 4.3.0 on


# ---------------------------------------------------------------- key evidence
@pytest.mark.parametrize("tree", TREES)
def test_device_identity(run, tree: str):
    _root, report, _found = run(tree)
    version, build, _states_, _severity = FIRMWARE[tree]
    assert report.device["firmware"] == version
    assert report.device["build"] == build
    assert (report.device["model"], report.device["model_family"]) == MODELS[tree]


def test_the_advisory_table_is_the_one_computed_by_hand():
    assert tuple(a["id"] for a in load_table()["advisories"]) == ADVISORY_IDS


@pytest.mark.parametrize("tree", TREES)
def test_firmware_advisories_computed_by_hand(run, tree: str):
    _root, _report, found = run(tree)
    version, build, states, severity = FIRMWARE[tree]
    finding = found["firmware.version"]
    evidence = finding.evidence
    assert (evidence["version"], evidence["build"]) == (version, build)
    assert evidence["source"] == "/etc/default_config/uLinux.conf" and "copies_disagree" not in evidence
    missing = {m["id"] for m in evidence.get("missing_fixes", [])}
    undecided = {m["id"] for m in evidence.get("undecided", [])}
    assert missing == {a for a, s in states.items() if s == MS}, finding.summary
    assert undecided == {a for a, s in states.items() if s == UN}, finding.summary
    # every advisory, also the ones the report does not list (fixed / not affected), judged as by hand
    release = parse_release(version, build)
    assert release is not None
    table = {a["id"]: a for a in load_table()["advisories"]}
    assert {a: judge(release, table[a]).state for a in ADVISORY_IDS} == states
    if severity:
        assert finding.severity == severity
    hero = tree == "gen-hero"
    for entry in evidence.get("missing_fixes", []):
        assert entry["fixed_in"] and all(f.startswith("h") == hero for f in entry["fixed_in"]), entry


@pytest.mark.parametrize("tree", TREES)
def test_no_secret_reaches_the_report(run, tree: str):
    root, report, _found = run(tree)
    text = report.to_json()
    secrets = []
    for line in (root / "etc/shadow").read_text().splitlines():
        field = line.split(":")[1]
        if field.lstrip("!*"):
            secrets += [field, field.lstrip("!*")]
    qid = root / "etc/config/qid.conf"
    if qid.exists():
        for entry in ConfigDocument(qid.read_bytes()).entries:
            if ("TOKEN" in entry.key.upper() and entry.key.upper() != "TOKEN_VALID_PERIOD") or entry.key == "QID":
                secrets.append(entry.value)
    assert secrets
    for secret in secrets:
        assert secret not in text, secret


def test_gen_42_autorun_runs_without_a_switch(run):
    _root, _report, found = run("gen-4.2")
    autorun = found["system.autorun"]
    assert "no autorun switch" in autorun.summary
    assert autorun.evidence["autorun"]["value"] is None and autorun.evidence["script"]["present"] is True
    assert autorun.evidence["firmware"] == "4.2.6.0999"
    assert found["myqnapcloud.ddns"].evidence["ddns_name"] == "oldnas459.mycloudnas.com"
    assert found["myqnapcloud.ddns"].severity == "info"


def test_gen_43_forwards_through_arc(run):
    _root, _report, found = run("gen-4.3")
    assert found["myqnapcloud.upnp-forwarding"].evidence["upnpcd_running"] is True
    published = found["myqnapcloud.published-services"]
    assert published.severity == "high"
    assert {(p["service"], p["router_port"]) for p in published.evidence["published"]} == {
        ("admin HTTP", 8080), ("Web Server HTTP", 80)}
    assert found["myqnapcloud.ddns"].severity == "medium"
    assert found["admin.https"].severity == "high"  # [Stunnel] Enable = 0
    telnet = found["service.telnet"].evidence
    assert telnet["telnetd_running"] is True and telnet["listener"]["listening"] is True
    autorun = found["system.autorun"].evidence
    assert autorun["script"]["present"] is True and autorun["autorun"]["value"] == "FALSE"


def test_gen_45_arc_ports_are_history(run):
    _root, _report, found = run("gen-4.5")
    published = found["myqnapcloud.published-services"]
    assert "history" in published.summary
    assert {p["router_port"] for p in published.evidence["recorded"]} == {8080, 443}
    assert found["service.ssh"].severity == "low"  # not on 22
    assert "Bonjour QNAP" in found["upnp.nas-discovery"].evidence["advertised"]


def test_gen_45_ddns_is_not_aggravated_by_arc_history(run):
    _root, _report, found = run("gen-4.5")
    ddns = found["myqnapcloud.ddns"]
    assert ddns.evidence["ddns_name"] == "millerhome.myqnapcloud.com"
    assert "forwarding" not in ddns.evidence and ddns.severity == "info", (ddns.summary, ddns.severity)


def test_gen_50_name_only_in_qid_conf(run):
    _root, _report, found = run("gen-5.0")
    ddns = found["myqnapcloud.ddns"]
    assert ddns.evidence["host_name"]["value"] == ""  # qnapddns.conf has no host
    assert ddns.evidence["ddns_name"] == "doe-studio.myqnapcloud.com"
    assert ddns.severity == "info"
    qid = ddns.evidence["qid"]
    assert qid["bound_to_qnap_id"] is True and qid["qnap_id"] == "j***@example.com"
    assert qid["access_control_mode"] == "1"


def test_gen_52_master_switch_silences_bonjour(run):
    _root, _report, found = run("gen-5.2")
    discovery = found["upnp.nas-discovery"].evidence
    assert discovery["bonjour_enabled"] is False
    assert any(k["key"] == "Web" and k["value"] == "1" for k in discovery["keys"])  # a per-service key is on
    assert "has the fixes" in found["firmware.version"].summary


def test_gen_compromised_integrity_evidence(run):
    _root, _report, found = run("gen-compromised")
    qpkg = found["integrity.qpkg-entries"].evidence
    assert [s["section"] for s in qpkg["found"]] == ["autorun"] and qpkg["sections"] == 3
    updates = found["integrity.update-sources"].evidence
    assert {(s["file"], s["key"]) for s in updates["update_sources"]} == {
        (f, k) for f in ("/etc/config/uLinux.conf", "/etc/default_config/uLinux.conf")
        for k in ("Live Update XML", "QPKG CENTER XML")}
    assert "0.0.0.0 update.qnap.com" in updates["hosts_entries"]
    cron = found["integrity.crontab"].evidence["found"]
    assert [c["line"].split()[5] for c in cron] == ["/share/CACHEDEV1_DATA/.qpkg/.liveupdate/liveupdate.sh"]
    ransom = found["integrity.ransomware"]
    assert ransom.severity == "critical" and "Qlocker" in ransom.summary
    assert found["system.autorun"].evidence["script"]["present"] is True
