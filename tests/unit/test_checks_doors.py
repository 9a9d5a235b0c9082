"""The other doors (service.smb, .afp, .ftp, .webserver, .snmp, .access-protection, .firewall) and installed apps
(apps.exposed) against small fake QTS trees: each verdict, its evidence, and the unknowns where the files
cannot tell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, Optional

import pytest

from exposure_guard.checks import get_check
from exposure_guard.checks.runner import evaluate
from exposure_guard.context import CheckContext
from exposure_guard.facts.apps import FIXED, MISSING, NOT_AFFECTED, UNKNOWN, assess_apps, judge_app, load_table
from exposure_guard.facts.apps import parse_app_version as v
from exposure_guard.facts.packages import Package
from exposure_guard.qts.root import QtsRoot
from tests.support.qts import write_tree

QTS_44 = {"System": {"Version": "4.4.2", "Number": "1270", "Build Number": "20200410"}}
QTS_51 = {"System": {"Version": "5.1.4", "Number": "2596", "Build Number": "20231128"}}


def tcp_table(ports: Iterable[int]) -> str:
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = ["%4d: 00000000:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 100 0 0 10 0"
            % (i, port, 1000 + i) for i, port in enumerate(ports)]
    return head + "\n".join(rows) + "\n"


def run(tmp_path: Path, check_id: str, ulinux: Dict[str, Dict[str, object]], default=QTS_51,
        files: Optional[Dict[str, str]] = None, listening: Optional[Iterable[int]] = None,
        processes: Iterable[str] = ()):
    files = dict(files or {})
    if listening is not None:
        files["proc/net/tcp"] = tcp_table(listening)
    for pid, name in enumerate(processes, start=4000):
        files["proc/%d/comm" % pid] = name + "\n"
    root = write_tree(tmp_path / "root", ulinux, default=default, files=files)
    return evaluate(get_check(check_id), CheckContext(QtsRoot(root), offline=True))  # as the runner does


# ---------------------------------------------------------------- SMB
SMB_ON = {"Samba": {"Enable": "TRUE"}}


@pytest.mark.parametrize("floor,status", [("NT1", "fail"), ("LANMAN2", "fail"), ("SMB2", "pass"), ("smb2_10", "pass"),
                                          ("SMB3_11", "pass"), ("WHATEVER", "unknown")])
def test_smb_is_judged_by_its_lowest_version(tmp_path, floor, status):
    conf = "[global]\n\tworkgroup = X\n\tserver min protocol = %s\n" % floor
    out = run(tmp_path, "service.smb", SMB_ON, files={"etc/config/smb.conf": conf})
    assert out.status == status, out.summary
    assert out.evidence["lowest_version"]["value"] == floor
    if status == "fail":
        assert out.summary == "SMB is on and accepts SMB1: the lowest version is %s (SMB1)" % floor.upper()


def test_smb_reads_samba_s_older_name_for_the_floor(tmp_path):
    out = run(tmp_path, "service.smb", SMB_ON, files={"etc/config/smb.conf": "[global]\nmin protocol = SMB2\n"})
    assert out.status == "pass" and out.evidence["lowest_version"]["key"] == "min protocol"


def test_smb_without_a_floor_allows_smb1_on_old_firmware_and_is_undecided_on_new(tmp_path):
    conf = {"etc/config/smb.conf": "[global]\nworkgroup = X\n"}
    old = run(tmp_path / "a", "service.smb", SMB_ON, default=QTS_44, files=conf)
    assert old.status == "fail" and "QTS before 4.5" in old.summary
    new = run(tmp_path / "b", "service.smb", SMB_ON, default=QTS_51, files=conf)
    assert new.status == "unknown" and "Samba version is not known" in new.summary
    missing = run(tmp_path / "c", "service.smb", SMB_ON, default=QTS_51)
    assert missing.status == "unknown" and "there is no /etc/config/smb.conf" in missing.summary


def test_smb_off_passes_but_a_running_smbd_is_judged(tmp_path):
    off = run(tmp_path / "a", "service.smb", {"Samba": {"Enable": "FALSE"}}, listening=[22])
    assert off.status == "pass" and off.summary == "SMB is off"
    running = run(tmp_path / "b", "service.smb", {"Samba": {"Enable": "FALSE"}}, processes=["smbd"],
                  files={"etc/config/smb.conf": "[global]\nserver min protocol = NT1\n"})
    assert running.status == "fail" and running.evidence["smbd_running"] is True
    listening = run(tmp_path / "c", "service.smb", {"System": {}}, listening=[445],
                    files={"etc/config/smb.conf": "[global]\nserver min protocol = SMB2\n"})
    assert listening.status == "pass" and listening.evidence["listener"]["listening"] is True


# ---------------------------------------------------------------- AFP, FTP
def test_afp(tmp_path):
    assert run(tmp_path / "a", "service.afp", {"Appletalk": {"Enable": "TRUE"}}).status == "fail"
    assert run(tmp_path / "b", "service.afp", {"Appletalk": {"Enable": "FALSE"}}, listening=[]).status == "pass"
    assert run(tmp_path / "c", "service.afp", {"System": {}}).status == "pass"  # QTS's default: off
    afpd = run(tmp_path / "d", "service.afp", {"Appletalk": {"Enable": "FALSE"}}, processes=["afpd"])
    assert afpd.status == "fail" and "afpd runs" in afpd.summary


def test_ftp(tmp_path):
    assert run(tmp_path / "a", "service.ftp", {"FTP": {"Enable": "False", "Port": 21}}).status == "pass"  # real case
    plain = run(tmp_path / "b", "service.ftp", {"FTP": {"Enable": "TRUE", "Port": 21}})
    assert (plain.status, plain.severity, plain.summary) == (
        "fail", "medium", "FTP is enabled on port 21 (the config turns it on)")
    moved = run(tmp_path / "c", "service.ftp", {"FTP": {"Enable": "TRUE", "Port": 2121}})
    assert moved.severity == "low"
    unset = run(tmp_path / "d", "service.ftp", {"FTP": {"Port": 21}})
    assert unset.status == "unknown" and "[FTP] Enable" in unset.summary
    assert run(tmp_path / "e", "service.ftp", {"FTP": {"Port": 21}}, listening=[22]).status == "pass"
    running = run(tmp_path / "f", "service.ftp", {"FTP": {"Port": 21}}, processes=["proftpd"])
    assert running.status == "fail" and "does not say on" in running.summary


@pytest.mark.parametrize("conf,severity,words", [
    ("TLSEngine on\nTLSRequired on\nPassivePorts 55536 56559\n", "low", "FTPS (TLS) required"),
    ("TLSEngine on\nTLSRequired off\n", "medium", ""),
    ("<Anonymous /share/Public>\n  User ftp\n</Anonymous>\n", "high", "anonymous logins allowed"),
])
def test_ftp_reads_the_generated_proftpd_config(tmp_path, conf, severity, words):
    out = run(tmp_path, "service.ftp", {"FTP": {"Enable": "TRUE", "Port": 21}},
              files={"etc/config/proftpd.conf": "# generated by QTS\nServerType standalone\n" + conf})
    assert (out.status, out.severity) == ("fail", severity) and words in out.summary, out.summary
    assert out.evidence["tls"]["file"] == "/etc/config/proftpd.conf"
    if "PassivePorts" in conf:
        assert out.evidence["tls"]["passive_ports"] == "55536-56559"


def test_ftp_without_a_proftpd_config_says_plain_ftp_is_assumed(tmp_path):
    out = run(tmp_path, "service.ftp", {"FTP": {"Enable": "TRUE", "Port": 21}})
    assert "plain FTP is assumed allowed" in out.evidence["tls"]
    huge = run(tmp_path / "b", "service.ftp", {"FTP": {"Enable": "TRUE", "Port": 21}},
               files={"etc/proftpd.conf": "# x\n" * 70000})
    assert huge.evidence["tls"]["error"].startswith("larger than") and huge.severity == "medium"


# ---------------------------------------------------------------- Web Server
PHPMYADMIN = "[phpMyAdmin]\nName = phpMyAdmin\nVersion = 5.2.1\nEnable = TRUE\nInstall_Path = /share/x/.qpkg/phpMyAdmin\n"


def test_webserver(tmp_path):
    on = run(tmp_path / "a", "service.webserver", {"QWEB": {"Enable": 1, "Port": 80, "SSL_Port": 8081}})
    assert (on.status, on.severity, on.summary) == ("fail", "low", "the Web Server is on (HTTP 80, HTTPS 8081)")
    sql = run(tmp_path / "b", "service.webserver", {"QWEB": {"Enable": 1}, "MySQL": {"Enable": "TRUE"}},
              files={"etc/config/qpkg.conf": PHPMYADMIN})
    assert sql.severity == "medium" and sql.summary.endswith("with phpMyAdmin, the built-in MySQL server")
    assert run(tmp_path / "c", "service.webserver", {"QWEB": {"Enable": 0}}, listening=[80]).status == "pass"
    unset = run(tmp_path / "d", "service.webserver", {"QWEB": {"Port": 8880}}, listening=[8880])
    assert unset.status == "fail" and "absent" in unset.summary
    assert run(tmp_path / "e", "service.webserver", {"QWEB": {"Port": 80}}, listening=[22]).status == "pass"
    assert run(tmp_path / "f", "service.webserver", {"QWEB": {"Port": 80}}).status == "unknown"


# ---------------------------------------------------------------- SNMP
def test_snmp_names_writable_and_well_known_communities_without_their_values(tmp_path):
    conf = ("# generated\nrwcommunity public\nrocommunity s3cr3t-Comm 10.0.0.0/24\n"
            "com2sec notConfigUser default private\n")
    out = run(tmp_path / "a", "service.snmp", {"SNMP": {"Server Enable": "TRUE"}},
              files={"etc/config/snmpd.conf": conf})
    assert (out.status, out.severity) == ("fail", "high")
    assert out.summary == "SNMP is on with a well-known community (public/private) and a writable community"
    assert [(c["directive"], c["writable"], c["well_known"]) for c in out.evidence["communities"]] == [
        ("rwcommunity", True, True), ("rocommunity", False, False), ("com2sec", False, True)]
    assert "s3cr3t" not in json.dumps(out.evidence)  # a community is a password
    alias = run(tmp_path / "b", "service.snmp", {"SNMP": {"Service Enable": "TRUE"}})
    assert (alias.status, alias.severity) == ("fail", "medium")
    assert alias.evidence["communities"] == "no /etc/config/snmpd.conf"
    assert run(tmp_path / "c", "service.snmp", {"SNMP": {"Server Enable": "FALSE"}}).status == "pass"
    assert run(tmp_path / "d", "service.snmp", {"System": {}}, processes=["snmpd"]).status == "fail"
    huge = run(tmp_path / "e", "service.snmp", {"SNMP": {"Server Enable": "TRUE"}},
               files={"etc/config/snmpd.conf": "# x\n" * 100000})
    assert huge.status == "unknown" and "larger than" in huge.summary


# ---------------------------------------------------------------- access protection, QuFirewall
@pytest.mark.parametrize("value,status", [("0", "fail"), ("FALSE", "fail"), ("1", "pass"), ("TRUE", "pass"),
                                          (None, "unknown"), ("maybe", "unknown")])
def test_access_protection(tmp_path, value, status):
    keys = {"Notice": 1} if value is None else {"Notice": 1, "Ban Enabled": value}
    out = run(tmp_path, "service.access-protection", {"Ban Engine": keys})
    assert out.status == status, out.summary


QUFIREWALL = ("[qufirewall]\nName = qufirewall\nVersion = 2.6.1\nEnable = %s\nQPKG_File = qufirewall.qpkg\n"
              "Install_Path = /share/CACHEDEV1_DATA/.qpkg/qufirewall\n")


@pytest.mark.parametrize("enable,status_line,status,words", [
    (None, None, "fail", "not installed"),
    ("FALSE", "firewall_status = 1", "fail", "disabled in App Center"),
    ("TRUE", "firewall_status = 0", "fail", "its firewall switch is off"),
    ("TRUE", None, "fail", "its firewall switch is off"),  # no QuFirewall.conf: QPKG scripts read it as 0
    ("TRUE", "firewall_status = 1", "pass", "QuFirewall is on (version 2.6.1)"),
    ("TRUE", "firewall_status = on-ish", "unknown", "cannot tell"),
])
def test_firewall(tmp_path, enable, status_line, status, words):
    files = {}
    if enable is not None:
        files["etc/config/qpkg.conf"] = QUFIREWALL % enable
    if status_line is not None:
        files["etc/config/QuFirewall.conf"] = "[Global]\n%s\n" % status_line
    out = run(tmp_path, "service.firewall", {"System": {}}, files=files)
    assert out.status == status and words in out.summary, out.summary
    if status == "fail":  # not installed: defence in depth only (info); installed but off: the owner's intent failed
        assert out.severity == ("info" if enable is None else None), out.severity


# ---------------------------------------------------------------- apps.exposed: the comparison rules
def advisory(advisory_id: str, app: str) -> dict:
    return next(a for a in load_table()["advisories"] if a["id"] == advisory_id and a["app"] == app)


@pytest.mark.parametrize("advisory_id,app,version,verdict,compared", [
    ("QSA-22-24", "PhotoStation", "6.0.21", MISSING, "6.0.22"),
    ("QSA-22-24", "PhotoStation", "6.0.22", FIXED, "6.0.22"),
    ("QSA-22-24", "PhotoStation", "6.1.1", MISSING, "6.1.2"),
    ("QSA-22-24", "PhotoStation", "6.2.0", FIXED, "a later line than every fix (5.2.14, 5.4.15, 5.7.18, 6.0.22, 6.1.2)"),
    ("QSA-22-24", "PhotoStation", "5.1.0", MISSING, "5.2.14"),
    ("NAS-201911-25", "PhotoStation", "5.5.3", MISSING, "5.7.10"),  # between listed lines: the next line's fix
    ("NAS-201911-25", "PhotoStation", "6.0.3", FIXED, "6.0.3"),
    ("QSA-24-08", "PhotoStation", "6.0.22", UNKNOWN, "the advisory names only line(s) 6.4 as affected"),
    ("QSA-24-08", "PhotoStation", "6.4.1", MISSING, "6.4.2"),
    ("QSA-21-13", "HybridBackup", "16.0.0300", MISSING, "16.0.0415"),
    ("QSA-21-13", "HybridBackup", "16.0.0415", FIXED, "16.0.0415"),
    ("QSA-21-13", "HybridBackup", "3.0.210412", FIXED, "3.0.210411"),
    ("QSA-21-19", "HybridBackup", "16.0.0300", NOT_AFFECTED, "line 16 is not affected"),
    ("QSA-24-41", "HybridBackup", "25.1.1", MISSING, "25.1.1.673"),
    ("QSA-24-41", "HybridBackup", "25.2.0.100", FIXED, "a later line than the affected ones (25.1)"),
    ("QSA-21-07", "SurveillanceStation", "5.1.5.4.2", MISSING, "5.1.5.4.3"),  # 64-bit line
    ("QSA-21-07", "SurveillanceStation", "5.1.5.3.3", FIXED, "5.1.5.3.3"),    # 32-bit line
    ("QSA-21-21", "VideoStationPro", "5.3.2", NOT_AFFECTED, "line 5.3 is not affected"),
    ("QSA-21-16", "MalwareRemover", "3.5.2.1", NOT_AFFECTED, "line 3 is not affected"),
    ("QSA-21-16", "MalwareRemover", "2.2.1", UNKNOWN, "the advisory names only line(s) 4 as affected"),
    ("QSA-20-08", "helpdesk", "3.0.3", FIXED, "3.0.3"),
    ("QSA-20-08", "helpdesk", "beta", UNKNOWN, "the installed version has no numbers to compare"),
])
def test_app_versions_are_compared_within_their_line(advisory_id, app, version, verdict, compared):
    assert judge_app(v(version), advisory(advisory_id, app)) == (verdict, compared)


def test_app_version_parsing():
    assert v("16.0.0415") == (16, 0, 415) and v(" 6.0.22 (build 1) ") == (6, 0, 22) and v("v1.2") == (1, 2)
    assert v("") is None and v(None) is None and v("abc") is None and v("1." + "2" * 20) is None


def pkg(section: str, version: str, enable: str = "TRUE") -> Package:
    return Package(section, {"name": section.lower(), "version": version, "enable": enable})


def test_apps_are_matched_without_case_and_disabled_apps_count_one_step_lower():
    result = assess_apps([pkg("HelpDesk", "2.0.7"), pkg("PhotoStation", "6.0.20", "FALSE"), pkg("Plex", "1.0")])
    assert [(m.name, m.advisory["id"], m.severity) for m in result.missing] == [
        ("Helpdesk", "QSA-20-08", "critical"), ("Photo Station", "QSA-22-24", "high")]
    assert [c["app"] for c in result.checked] == ["Helpdesk", "Photo Station"]  # Plex is not in the table
    assert result.worst_severity() == "critical"


def test_apps_exposed_check(tmp_path):
    photo = ("[PhotoStation]\nName = PhotoStation\nVersion = 6.0.20\nEnable = TRUE\n"
             "Install_Path = /share/CACHEDEV1_DATA/.qpkg/PhotoStation\n")
    out = run(tmp_path / "a", "apps.exposed", {"System": {}}, files={"etc/config/qpkg.conf": photo})
    assert (out.status, out.severity) == ("fail", "critical")
    assert out.summary == "1 app fix(es) missing: Photo Station 6.0.20 (QSA-22-24, exploited)"
    missing = out.evidence["missing_fixes"][0]
    assert missing["exploited"].startswith("DeadBolt") and missing["compared_with"] == "6.0.22"
    assert [u["advisory"] for u in out.evidence["undecided"]] == ["QSA-24-08"]
    fixed = run(tmp_path / "b", "apps.exposed", {"System": {}},
                files={"etc/config/qpkg.conf": photo.replace("6.0.20", "6.1.2")})
    assert fixed.status == "unknown" and "QSA-24-08" in fixed.summary  # 6.1 is older than the only affected line
    none = run(tmp_path / "c", "apps.exposed", {"System": {}}, files={"etc/config/qpkg.conf": ""})
    assert none.status == "pass" and none.summary.startswith("none of the 12 apps")
    current = run(tmp_path / "d", "apps.exposed", {"System": {}},
                  files={"etc/config/qpkg.conf": photo.replace("6.0.20", "6.4.2")})
    assert current.status == "pass" and "Photo Station 6.4.2" in current.summary


def test_the_app_table_is_well_formed():
    table = load_table()
    severities = {"critical", "high", "medium", "low"}
    for entry in table["advisories"]:
        assert entry["app"] in table["apps"], entry["id"]
        assert entry["severity"] in severities and entry["confidence"] in ("confirmed", "likely")
        assert entry["fixed"] and all(v(f) for f in entry["fixed"]), entry["id"]
        assert all(v(a) for a in entry["affected"] + entry["unaffected"]), entry["id"]
        assert len(entry["published"]) == 10 and entry["published"][4] == "-"
        assert entry["sources"] and all(s.startswith("https://") for s in entry["sources"])
        assert entry["cve"] and all(c.startswith("CVE-") for c in entry["cve"])
    keys = [(e["id"], e["app"]) for e in table["advisories"]]
    assert len(keys) == len(set(keys))


# ---------------------------------------------------------------- containers.published
def docker_proxy(host_port: int, container_port: int, host_ip: str = "0.0.0.0", proto: str = "tcp") -> bytes:
    argv = ["/usr/bin/docker-proxy", "-proto", proto, "-host-ip", host_ip, "-host-port", str(host_port),
            "-container-ip", "172.17.0.2", "-container-port", str(container_port)]
    return b"\0".join(a.encode() for a in argv) + b"\0"


def engine(root: Path, cid: str, name: str, bindings: dict, running: bool = True,
           data_root: str = "share/CACHEDEV1_DATA/Container/container-station-data/lib/docker") -> None:
    folder = root / data_root / "containers" / cid
    folder.mkdir(parents=True)
    (folder / "hostconfig.json").write_text(json.dumps({"PortBindings": bindings, "NetworkMode": "bridge"}))
    (folder / "config.v2.json").write_text(json.dumps({"Name": "/" + name, "State": {"Running": running}}))


def containers(tmp_path: Path, prepare=None, files=None):
    root = write_tree(tmp_path / "root", {"System": {}}, files=files or {})
    if prepare:
        prepare(root)
    return evaluate(get_check("containers.published"), CheckContext(QtsRoot(root), offline=True))


def test_container_ports_from_docker_proxy_processes_and_engine_state(tmp_path):
    def prepare(root):
        (root / "proc/700").mkdir(parents=True)
        (root / "proc/700/cmdline").write_bytes(docker_proxy(8096, 8096))
        engine(root, "a" * 64, "jellyfin", {"8096/tcp": [{"HostIp": "", "HostPort": "8096"}]})
        engine(root, "b" * 64, "db", {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "15432"}]})
        engine(root, "c" * 64, "old", {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8000"}]}, running=False)
        engine(root, "d" * 64, "dns", {"53/udp": [{"HostIp": "0.0.0.0", "HostPort": "53"}]},
               data_root="var/lib/docker")

    out = containers(tmp_path, prepare)
    assert out.status == "fail", out.summary
    assert out.summary == ("2 container port(s) published on every address of the NAS: 8096/tcp → jellyfin:8096, "
                           "53/udp → dns:53")
    rows = {r["host"]: r for r in out.evidence["published"]}
    assert rows["0.0.0.0:8096/tcp"]["found_by"] == "docker-proxy process and engine state"
    assert rows["127.0.0.1:15432/tcp"]["all_addresses"] is False
    assert rows["0.0.0.0:8000/tcp"]["running"] is False  # a stopped container publishes nothing now
    assert out.evidence["data_roots"] == ["/share/CACHEDEV1_DATA/Container/container-station-data/lib/docker",
                                          "/var/lib/docker"]


def test_containers_bound_to_one_address_pass_and_none_pass(tmp_path):
    out = containers(tmp_path / "a", lambda root: engine(root, "b" * 64, "db", {
        "5432/tcp": [{"HostIp": "192.168.1.20", "HostPort": "5432"}]}))
    assert out.status == "pass" and "specific addresses only (1)" in out.summary
    assert containers(tmp_path / "b").summary == "no container publishes a port"


def test_damaged_container_state_is_named_and_bounded(tmp_path):
    def prepare(root):
        folder = root / "var/lib/docker/containers/x"
        folder.mkdir(parents=True)
        (folder / "hostconfig.json").write_text("{not json")
        big = root / "var/lib/docker/containers/y"
        big.mkdir()
        (big / "hostconfig.json").write_bytes(b"{" + b" " * (600 * 1024) + b"}")
        bomb = root / "var/lib/docker/containers/w"
        bomb.mkdir()
        (bomb / "hostconfig.json").write_text("[" * 100000 + "]" * 100000)
        odd = root / "var/lib/docker/containers/z"
        odd.mkdir()
        (odd / "hostconfig.json").write_text(json.dumps({"PortBindings": {"80/tcp": "nonsense", "81/tcp": [
            {"HostPort": "99999"}, "x", {"HostPort": "8081"}]}}))

    out = containers(tmp_path, prepare)
    assert out.status == "fail" and "8081/tcp → z:81" in out.summary  # the readable one still counts
    problems = " ".join(out.evidence["problems"])
    assert "/var/lib/docker/containers/x/hostconfig.json" in problems and "larger than 512 KiB" in problems
    assert "/var/lib/docker/containers/w/hostconfig.json" in problems  # a nesting bomb is a problem, not a crash
    only_damaged = containers(tmp_path / "b", lambda root: (root / "var/lib/docker/containers/x").mkdir(parents=True)
                              or (root / "var/lib/docker/containers/x/hostconfig.json").write_text("[]"))
    assert only_damaged.status == "unknown" and "not a JSON object" in only_damaged.summary


def test_docker_proxy_command_lines_are_parsed_strictly():
    from exposure_guard.facts.containers import parse_docker_proxy

    item = parse_docker_proxy(["docker-proxy", "-proto", "tcp", "-host-ip", "::", "-host-port", "443",
                               "-container-ip", "172.18.0.5", "-container-port", "8443"])
    assert item is not None and item.to_dict() == {"host": "[::]:443/tcp", "container": "172.18.0.5",
                                                   "container_port": 8443, "running": True, "all_addresses": True,
                                                   "found_by": "docker-proxy process"}
    assert parse_docker_proxy(["docker-proxy", "-host-port", "0"]) is None
    assert parse_docker_proxy(["docker-proxy", "-proto", "icmp", "-host-port", "80"]) is None
    assert parse_docker_proxy(["docker-proxy"]) is None
