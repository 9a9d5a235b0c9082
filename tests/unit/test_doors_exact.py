"""Exact answers of the readers behind the other doors (facts/netfilter, fileservices, apps, owners, containers):
every field and every reason, so a changed word, bound or default shows (these modules are mutation-tested,
docs/testing.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exposure_guard.context import CheckContext
from exposure_guard.errors import Unknowable
from exposure_guard.facts import apps, containers, fileservices, netfilter
from exposure_guard.facts.owners import MappingContext, leads_to, mapping_context, owner_of
from exposure_guard.facts.packages import Package
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import QtsRoot
from exposure_guard.upnp.models import PortMapping
from tests.support.qts import write_tree

# ---------------------------------------------------------------- netfilter
HEAD = "*filter\n:INPUT ACCEPT [0:0]\n:QUFIREWALL - [0:0]\n"


def chain(*rules: str) -> str:
    return HEAD + "".join("-A QUFIREWALL %s\n" % r for r in rules) + "COMMIT\n"


@pytest.mark.parametrize("rules,expected", [
    (["-i lo -j ACCEPT", "-m state --state ESTABLISHED -j ACCEPT", "-s 172.16.0.0/12 -j ACCEPT",
      "-j REJECT --reject-with icmp-port-unreachable"],
     (True, True, "every ACCEPT before rule 4 (a final REJECT) admits only LAN, loopback or established traffic", 4)),
    (["-m geoip --src-cc TW -j ACCEPT", "-j DROP"],
     (True, None, "rule 1 accepts by an address set or country: not judged", 2)),
    (["-s 10.0.0.0/8 -j ACCEPT", "-j QUFW_LOG"], (True, None, "rule 2 jumps to QUFW_LOG: not judged", 2)),
    (["-s 10.0.0.0/8"], (True, None, "rule 1 jumps to ?: not judged", 1)),
    (["-s 10.0.0.0/8 -j ACCEPT", "-p tcp -j ACCEPT", "-j DROP"], (True, False, "rule 2 accepts any source", 3)),
    (["-s 2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff/128,2001:db8:aaaa:bbbb:cccc:dddd:eeee:fff0/128 -j ACCEPT", "-j DROP"],
     (True, False, "rule 1 accepts the public source %s" % "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff/128,2001:db8:aaaa:"
      "bbbb:cccc:dddd:eeee:fff0/128"[:60], 2)),
    (["-s 10.0.0.0/8 -j ACCEPT"], (True, False, "QUFIREWALL does not end in a DROP or REJECT of everything else", 1)),
    (["-s 10.0.0.0/8 -j ACCEPT", "-p udp -j DROP"],
     (True, False, "QUFIREWALL does not end in a DROP or REJECT of everything else", 2)),
])
def test_chain_verdicts(rules, expected):
    verdict = netfilter.judge_chain(chain(*rules))
    assert (verdict.found, verdict.lan_only, verdict.reason, verdict.rules) == expected


def test_chain_edges():
    missing = netfilter.judge_chain("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    assert (missing.found, missing.lan_only, missing.reason, missing.rules) == (
        False, None, "no QUFIREWALL chain: QuFirewall's rules are not loaded", 0)
    empty = netfilter.judge_chain(HEAD + "COMMIT\n")  # the chain exists, empty: nothing is dropped
    assert (empty.found, empty.lan_only, empty.rules) == (True, False, 0)
    long_line = '-A QUFIREWALL -m comment --comment "' + "x" * 200
    bad = netfilter.judge_chain(HEAD + "-A QUFIREWALL -j ACCEPT -s 10.0.0.0/8\n" + long_line + "\nCOMMIT\n")
    assert (bad.found, bad.lan_only, bad.rules) == (True, None, 1)
    assert bad.reason == "a rule of QUFIREWALL cannot be read: %r" % long_line[:120]
    many = netfilter.judge_chain(chain(*["-s 10.0.0.0/8 -j ACCEPT"] * (netfilter.MAX_RULES + 1)))
    assert (many.found, many.lan_only, many.rules) == (True, None, netfilter.MAX_RULES + 1)
    assert many.reason == "QUFIREWALL has more than 2000 rules: not judged"
    exactly = netfilter.judge_chain(chain(*["-s 10.0.0.0/8 -j ACCEPT"] * netfilter.MAX_RULES, "-j DROP"))
    assert exactly.lan_only is None  # 2001 rules with the drop
    at_cap = netfilter.judge_chain(chain(*["-s 10.0.0.0/8 -j ACCEPT"] * (netfilter.MAX_RULES - 1), "-j DROP"))
    assert at_cap.lan_only is True and at_cap.rules == netfilter.MAX_RULES
    other_chain = netfilter.judge_chain(HEAD + "-A OTHER -j DROP\n-A QUFIREWALLX -j DROP\nCOMMIT\n")
    assert other_chain.rules == 0
    assert netfilter.judge_chain(chain("-j DROP"), chain="OTHER").found is False
    assert netfilter.judge_chain(chain("-j DROP", "-s 8.8.8.8 -j ACCEPT")).lan_only is True  # after the drop: dead
    verdict = netfilter.judge_chain(chain("-j DROP"))
    assert verdict.to_dict() == {"chain": "QUFIREWALL", "found": True, "lan_only": True, "rules": 1,
                                 "reason": verdict.reason, "read_with": "iptables-save -t filter"}


@pytest.mark.parametrize("source,lan", [("10.1.2.0/24", True), ("172.31.0.0/16", True), ("172.32.0.0/16", False),
                                        ("192.168.0.0/16", True), ("127.0.0.1", True), ("169.254.1.1", True),
                                        ("fd00::/8", True), ("fe80::1", True), ("::1", True), ("10.0.0.0/7", False),
                                        ("100.64.0.1", False), ("198.51.100.7", False), ("nonsense", False),
                                        ("10.0.0.1,10.0.0.2", False), ("0.0.0.0/0", False)])
def test_what_counts_as_a_lan_source(source, lan):
    assert netfilter._private(source) is lan


def test_read_chain_runs_iptables_save_only_where_tools_may_run(tmp_path):
    root = write_tree(tmp_path / "root", {"System": {}})
    tool = root / "usr/sbin/iptables-save"
    tool.parent.mkdir(parents=True)
    log = tmp_path / "args"
    tool.write_text("#!/bin/sh\necho \"$@\" > %s\ncat <<'X'\n%sX\n" % (log, chain("-j DROP")))
    tool.chmod(0o755)
    assert netfilter.read_chain(QtsRoot(root, use_tools=False)) is None
    verdict = netfilter.read_chain(QtsRoot(root, use_tools=True))
    assert verdict is not None and verdict.lan_only is True and log.read_text().split() == ["-t", "filter"]
    tool.write_text("#!/bin/sh\necho '%s'\nexit 1\n" % chain("-j DROP"))
    assert netfilter.read_chain(QtsRoot(root, use_tools=True)) is None  # a failed run says nothing
    tool.write_text("#!/nonexistent/interpreter\n")
    assert netfilter.read_chain(QtsRoot(root, use_tools=True)) is None
    tool.write_text("#!/bin/sh\nhead -c %d /dev/zero | tr '\\0' 'x'\n" % (netfilter.MAX_OUTPUT + 1))
    assert netfilter.read_chain(QtsRoot(root, use_tools=True)) is None


# ---------------------------------------------------------------- fileservices
def proftpd(tmp_path: Path, text: bytes, rel: str = "etc/config/proftpd.conf"):
    root = write_tree(tmp_path / "root", {"System": {}}, files={rel: text})
    return fileservices.ftp_tls(QtsRoot(root))


@pytest.mark.parametrize("required,value", [("on", True), ("ctrl", True), ("both", True), ("ctrl+data", True),
                                            ("auth+data", True), ("AUTH", True), ("off", False), ("data", False)])
def test_ftp_tls_required_values(tmp_path, required, value):
    assert proftpd(tmp_path, b"TLSRequired %s\n" % required.encode())["tls_required"] is value


def test_ftp_tls_exact(tmp_path):
    text = (b"# QTS\nTLSEngine on # on here\nTLSEngine\nPassivePorts 1234567 7654321\nPassivePorts 1\n"
            b"\xff\xfe broken\n<Anonymous /share/Public>\n")
    assert proftpd(tmp_path / "a", text) == {"file": "/etc/config/proftpd.conf", "tls_engine": True,
                                             "tls_required": None, "passive_ports": "123456-765432",
                                             "anonymous": True}
    assert proftpd(tmp_path / "b", b"TLSEngine off\n", rel="etc/proftpd/proftpd.conf") == {
        "file": "/etc/proftpd/proftpd.conf", "tls_engine": False, "tls_required": None, "passive_ports": None,
        "anonymous": False}
    big = proftpd(tmp_path / "c", b"#" * (fileservices.MAX_PROFTPD_BYTES + 1))
    assert big == {"file": "/etc/config/proftpd.conf", "tls_engine": None, "tls_required": None,
                   "passive_ports": None, "anonymous": False, "error": "larger than 256 KiB: not read"}
    exact = proftpd(tmp_path / "d", b"#" * (fileservices.MAX_PROFTPD_BYTES - 13) + b"\nTLSEngine on")  # the cap
    assert exact["tls_engine"] is True and "error" not in exact
    assert fileservices.ftp_tls(QtsRoot(write_tree(tmp_path / "e", {"System": {}}))) is None


def test_ftp_tls_prefers_the_qts_path(tmp_path):
    root = write_tree(tmp_path / "root", {"System": {}}, files={"etc/config/proftpd.conf": "TLSEngine on\n",
                                                                "etc/proftpd.conf": "TLSEngine off\n"})
    assert fileservices.ftp_tls(QtsRoot(root))["tls_engine"] is True


def snmp(tmp_path: Path, text: str):
    root = write_tree(tmp_path / "root", {"System": {}}, files={"etc/config/snmpd.conf": text})
    return fileservices.snmp_communities(QtsRoot(root))


def test_snmp_communities_exact(tmp_path):
    text = ("# rocommunity commented\nROCOMMUNITY Public\nrocommunity6 other fd00::/8\n"
            "rwcommunity private 10.0.0.0/8 .1.3\ncom2sec local 10.0.0.0/8 secret\ncom2sec6 any default PUBLIC\n"
            "syslocation office\n")
    assert snmp(tmp_path, text) == [
        {"directive": "rocommunity", "writable": False, "well_known": True, "source": "any address"},
        {"directive": "rocommunity6", "writable": False, "well_known": False, "source": "fd00::/8"},
        {"directive": "rwcommunity", "writable": True, "well_known": True, "source": "10.0.0.0/8"},
        {"directive": "com2sec", "writable": False, "well_known": False, "source": "10.0.0.0/8"},
        {"directive": "com2sec6", "writable": False, "well_known": True, "source": "default"}]
    assert fileservices.snmp_communities(QtsRoot(write_tree(tmp_path / "n", {"System": {}}))) is None
    with pytest.raises(Unknowable) as caught:
        snmp(tmp_path / "big", "#" * (fileservices.MAX_SNMPD_BYTES + 1))
    assert str(caught.value) == "/etc/config/snmpd.conf is larger than 256 KiB: not read"
    assert snmp(tmp_path / "edge", "#" * (fileservices.MAX_SNMPD_BYTES - 20) + "\nrwcommunity x\n")[0]["writable"]


@pytest.mark.parametrize("firmware,conf,expected", [
    ((4, 4, 2, 1270), None, (True, None, "there is no /etc/config/smb.conf, and the Samba of QTS before 4.5 (4.7 on "
                                         "QTS 4.4.1) then accepts LANMAN1, i.e. SMB1")),
    ((4, 5, 0, 0), "[global]\nx = 1\n", (None, None, "smb.conf sets no lowest version; Samba's own default then "
                                                      "decides (SMB1 before Samba 4.11) and this firmware's Samba "
                                                      "version is not known")),
    ((), "[global]\nx = 1\n", (None, None, "smb.conf sets no lowest version; Samba's own default then decides (SMB1 "
                                           "before Samba 4.11) and this firmware's Samba version is not known")),
    ((5, 1), '[global]\nserver min protocol = "nt1"\n', (True, "NT1", "the lowest version is NT1 (SMB1)")),
    ((5, 1), "[global]\nmin protocol = SMB2_02\n", (False, "SMB2_02", "the lowest version is SMB2_02")),
    ((5, 1), "[global]\nserver min protocol = SMB9\n",
     (None, "SMB9", "the lowest version 'SMB9' is not a Samba protocol name")),
])
def test_smb_floor_exact(tmp_path, firmware, conf, expected):
    files = {"etc/config/smb.conf": conf} if conf is not None else {}
    root = write_tree(tmp_path / "root", {"System": {}}, files=files)
    floor = fileservices.smb_floor(QtsConfig(QtsRoot(root)), firmware)
    assert (floor.smb1, floor.value, floor.reason) == expected


def test_firewall_state_without_an_enable_key_is_undecided(tmp_path):
    root = write_tree(tmp_path / "root", {"System": {}}, files={
        "etc/config/qpkg.conf": "[QuFirewall]\nVersion = 2.6\nInstall_Path = /share/x/.qpkg/qufirewall\n",
        "etc/config/QuFirewall.conf": "[Global]\nfirewall_status = 1\n"})
    state = fileservices.firewall_state(QtsConfig(QtsRoot(root)))
    assert (state.installed, state.enabled, state.version, state.on) == (True, None, "2.6", None)
    assert state.running_switch is not None and state.running_switch.value == "1"


# ---------------------------------------------------------------- apps
def test_app_finding_and_assessment_exact():
    table = apps.load_table()
    result = apps.assess_apps([Package("photostation", {"version": "6.0.21", "enable": "TRUE"}),
                               Package("QDMS", {"enable": "FALSE"}), Package("Other", {"version": "1"})], table)
    assert result.table_date == table["table_date"]
    photo = result.checked[0]
    assert (photo["app"], photo["section"], photo["version"], photo["enabled"]) == ("Photo Station", "photostation",
                                                                                     "6.0.21", True)
    assert photo["advisories"][0] == {"advisory": "QSA-22-24", "verdict": "missing", "compared_with": "6.0.22"}
    assert [a["advisory"] for a in photo["advisories"]] == ["QSA-22-24", "NAS-201911-25", "QSA-24-08"]
    assert result.checked[1]["version"] is None and result.checked[1]["enabled"] is False
    assert len(result.checked) == 2
    assert [(m.section, m.advisory["id"]) for m in result.missing] == [("photostation", "QSA-22-24")]
    assert sorted((u.section, u.advisory["id"]) for u in result.unknown) == [
        ("QDMS", "QSA-21-11"), ("QDMS", "QSA-23-35"), ("photostation", "QSA-24-08")]
    finding = result.missing[0]
    advisory = finding.advisory
    assert finding.to_dict() == {
        "app": "Photo Station", "section": "photostation", "version": "6.0.21", "enabled": True,
        "advisory": "QSA-22-24", "cve": ["CVE-2022-27593"], "severity": "critical", "published": "2022-09-08",
        "fixed_in": ["6.1.2", "6.0.22", "5.7.18", "5.4.15", "5.2.14"], "compared_with": "6.0.22",
        "note": advisory["note"], "sources": advisory["sources"],
        "exploited": "DeadBolt (September 2022); CISA KEV 2022-09-08"}
    not_exploited = next(u for u in result.unknown if u.advisory["id"] == "QSA-24-08").to_dict()
    assert "exploited" not in not_exploited and not_exploited["severity"] == "high"
    assert result.worst_severity() == "critical"
    assert apps.AppAssessment("x").worst_severity() == "high"
    assert apps.assess_apps([]).table_date == table["table_date"]


def test_app_severity_steps():
    advisory = {"id": "X", "severity": "medium", "exploited": None}
    assert apps.AppFinding("s", "n", "1", True, advisory, "missing", "1").severity == "medium"
    assert apps.AppFinding("s", "n", "1", None, advisory, "missing", "1").severity == "medium"
    assert apps.AppFinding("s", "n", "1", False, advisory, "missing", "1").severity == "low"
    hot = dict(advisory, exploited="yes")
    assert apps.AppFinding("s", "n", "1", False, hot, "missing", "1").severity == "high"
    many = apps.AppAssessment("d")
    many.missing = [apps.AppFinding("s", "n", "1", True, advisory, "missing", "1"),
                    apps.AppFinding("s", "n", "1", True, dict(advisory, severity="high"), "missing", "1")]
    assert many.worst_severity() == "high"


def test_app_lines_exact():
    assert apps._line((6,), 2) == (6, 0) and apps._line((6, 0, 22), 2) == (6, 0)
    assert apps.parse_app_version("6.0.22-build5") == (6, 0, 22)
    advisory = {"fixed": ["2.0.0"], "series_parts": 1}
    assert apps.judge_app((1, 9), advisory) == ("missing", "2.0.0")
    assert apps.judge_app((3, 0), advisory) == ("fixed", "a later line than every fix (2.0.0)")
    assert apps.judge_app((2, 0, 0), {"fixed": ["2.0.0"]}) == ("fixed", "2.0.0")
    assert apps.judge_app((2, 0), {"fixed": ["2.0.0"], "unaffected": ["2.0"]}) == ("not-affected",
                                                                                  "line 2.0 is not affected")
    assert apps.judge_app((1, 0), {"fixed": ["2.1.5"], "affected": ["2.1"]}) == (
        "unknown", "the advisory names only line(s) 2.1 as affected")


# ---------------------------------------------------------------- owners
def mapping(external: int, internal: int, client: str = "10.0.0.5", description: str = "") -> PortMapping:
    return PortMapping("", external, "TCP", internal, client, True, description, 0)


def test_owner_rules_exact():
    known = MappingContext(["10.0.0.5"], {8080: "[System] ExtPort"}, True, {22: "SSH"}, {8096: "jellyfin"})
    cases = {
        (9000, 9000, "10.0.0.9", "QNAP"): ("other-host", "another LAN host (10.0.0.9)",
                                          "its internal client is not an address of this NAS"),
        (9000, 9000, "10.0.0.5", "MyCloudNAS web"): ("arc", "this NAS's Auto Router Configuration (myQNAPcloud)",
                                                    "its description names 'mycloudnas'"),
        (9000, 9000, "10.0.0.5", "qts"): ("arc", "this NAS's Auto Router Configuration (myQNAPcloud)",
                                         "its description names 'qts'"),
        (8080, 8080, "10.0.0.5", ""): ("arc", "this NAS's Auto Router Configuration (myQNAPcloud)",
                                      "its router port 8080 is the one ARC recorded in uLinux.conf [System] ExtPort"),
        (9000, 9000, "10.0.0.5", "Emby Server"): ("app", "Emby Server", "its description names 'emby'"),
        (9000, 8096, "10.0.0.5", ""): ("container", "container jellyfin (or software in it)",
                                      "internal port 8096 is published by container jellyfin"),
        (9000, 32400, "10.0.0.5", "x"): ("app", "Plex Media Server",
                                        "internal port 32400 is Plex Media Server's usual port"),
        (9000, 9001, "10.0.0.5", "odd"): ("unknown", "unknown", "neither its description ('odd') nor its ports "
                                                               "match ARC or a known app"),
    }
    for (external, internal, client, description), expected in cases.items():
        owner = owner_of(mapping(external, internal, client, description), known)
        assert (owner.kind, owner.label, owner.why) == expected
        assert owner.to_dict() == dict(zip(("kind", "label", "why"), expected))
    off = MappingContext(["10.0.0.5"], {}, False, {})
    assert owner_of(mapping(1, 1, description="QNAP"), off).label.endswith(", left over: ARC is off now")
    undecided = MappingContext(["10.0.0.5"], {}, None, {})
    assert owner_of(mapping(1, 1, description="QNAP"), undecided).label == \
        "this NAS's Auto Router Configuration (myQNAPcloud)"
    assert leads_to(mapping(2222, 22), known) == "SSH" and leads_to(mapping(8096, 0), known) == "container jellyfin"
    assert leads_to(mapping(5, 6), known) == ""
    assert leads_to(mapping(22, 0), known) == "SSH"  # an internal port of 0 means the external one
    assert leads_to(mapping(1, 8096), known) == "container jellyfin"


def test_mapping_context_exact(tmp_path):
    root = write_tree(tmp_path / "root", {"System": {"ExtPort": 8080}, "Stunnel": {"ExtSSLPort": 0},
                                          "QWEB": {"ExtPort": 8080, "ExtSSLPort": 8443}},
                      files={"etc/config/upnpc.conf": "[UPnP_Global]\nEnable = FALSE\n"})
    known = mapping_context(CheckContext(QtsRoot(root), offline=True), ["10.0.0.5"])
    assert known.arc_ports == {8080: "[System] ExtPort", 8443: "[QWEB] ExtSSLPort"}
    assert known.arc_on is False and known.nas_addresses == ("10.0.0.5",) and known.containers == {}
    (root / "proc/77").mkdir(parents=True)
    (root / "proc/77/comm").write_text("upnpcd\n")
    assert mapping_context(CheckContext(QtsRoot(root), offline=True), []).arc_on is True
    (root / "etc/config/upnpc.conf").write_text("[UPnP_Global]\nEnable = TRUE\n")
    (root / "proc/77/comm").write_text("other\n")
    assert mapping_context(CheckContext(QtsRoot(root), offline=True), []).arc_on is True
    (root / "etc/config/upnpc.conf").write_bytes(b"\xff" * 10)  # unreadable as ini? still read: value None
    assert mapping_context(CheckContext(QtsRoot(root), offline=True), []).arc_on in (False, None)


# ---------------------------------------------------------------- containers
def test_docker_proxy_defaults_exact():
    item = containers.parse_docker_proxy(["docker-proxy", "-host-port", "8080"])
    assert item is not None and (item.host_ip, item.host_port, item.proto, item.container, item.container_port,
                                 item.running, item.source) == ("0.0.0.0", 8080, "tcp", "?", None, True,
                                                                "docker-proxy process")
    sctp = containers.parse_docker_proxy(["docker-proxy", "-proto", "SCTP", "-host-port", "1", "-container-port",
                                          "65535"])
    assert sctp is not None and (sctp.proto, sctp.host_port, sctp.container_port) == ("sctp", 1, 65535)
    assert containers.parse_docker_proxy(["docker-proxy", "-host-port", "65536"]) is None
    assert containers._port("65535") == 65535 and containers._port("0") is None and containers._port(" 7 ") == 7
    wide = containers.Published("", 1, "tcp", "c", None, None, "s")
    assert wide.host_ip == "0.0.0.0" and wide.all_addresses and wide.key() == ("0.0.0.0", 1, "tcp")
    assert containers.Published("::", 1, "tcp", "c", 2, True, "s").all_addresses
    assert not containers.Published("127.0.0.1", 1, "tcp", "c", 2, True, "s").all_addresses
    assert containers.Published("1.2.3.4", 5, "udp", "c", 6, False, "s").to_dict() == {
        "host": "1.2.3.4:5/udp", "container": "c", "container_port": 6, "running": False, "all_addresses": False,
        "found_by": "s"}


def test_container_ports_bounds(monkeypatch):
    found = containers.ContainerPorts()
    monkeypatch.setattr(containers, "MAX_PUBLISHED", 2)
    for port in (1, 2, 3, 4):
        found.add(containers.Published("", port, "tcp", "c", port, True, "docker-proxy process"))
    found.add(containers.Published("", 1, "tcp", "named", 1, True, "engine state"))
    assert [p.host_port for p in found.published] == [1, 2] and found.left_out == 2
    assert (found.published[0].container, found.published[0].source) == ("named",
                                                                         "docker-proxy process and engine state")
    found.add(containers.Published("", 2, "tcp", "second", 2, True, "docker-proxy process"))
    assert found.published[1].container == "c"  # another proxy line for the same port changes nothing
    found.published.append(containers.Published("", 9, "udp", "u", 9, True, "s"))
    found.published.append(containers.Published("", 10, "tcp", "stopped", 10, False, "s"))
    found.published.append(containers.Published("", 11, "tcp", "maybe", 11, None, "s"))
    assert [p.host_port for p in found.tcp_ports()] == [1, 2, 11]


def test_engine_state_bounds_and_problems(tmp_path, monkeypatch):
    root = tmp_path / "root"
    data = root / "var/lib/docker"
    (data).mkdir(parents=True)
    (data / "containers").write_text("not a folder")
    found = containers.container_ports(QtsRoot(root))
    assert found.data_roots == [] and found.problems == ["/var/lib/docker/containers: Not a directory"]
    (data / "containers").unlink()
    for name in ("a", "b", "c"):
        folder = data / "containers" / name
        folder.mkdir(parents=True)
        (folder / "hostconfig.json").write_text(json.dumps({"PortBindings": {"80/tcp": [{"HostPort": "80%d" % len(name)}]}}))
    (data / "containers/b/config.v2.json").write_text(json.dumps({"Name": "/web", "State": {"Running": False}}))
    (data / "containers/c/config.v2.json").write_text("[1]")
    monkeypatch.setattr(containers, "MAX_CONTAINERS", 2)
    found = containers.container_ports(QtsRoot(root))
    assert found.data_roots == ["/var/lib/docker"]
    assert found.problems == ["3 containers under /var/lib/docker: only the first 2 read"]
    assert [(p.container, p.running) for p in found.published] == [("a", None)]  # b: same port; c not read
    assert containers._read_json.__name__ and found.left_out == 0


def test_read_json_bounds(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b" " * containers.MAX_STATE_BYTES + b"{}")
    with pytest.raises(ValueError, match="larger than 512 KiB"):
        containers._read_json(str(path))
    path.write_bytes(b" " * (containers.MAX_STATE_BYTES - 2) + b"{}")
    assert containers._read_json(str(path)) == {}
    path.write_text("[]")
    with pytest.raises(ValueError, match="not a JSON object"):
        containers._read_json(str(path))


def test_docker_proxy_processes_read_their_bounded_command_line(tmp_path, monkeypatch):
    root = tmp_path / "root"
    for pid, argv in ((10, [b"/usr/bin/docker-proxy", b"-host-port", b"8080"]), (11, [b"dockerd"]),
                      (12, [b"/x/docker-proxy", b"-host-port"]), (13, [b"docker-proxy", b"-host-port", b"9090"])):
        (root / "proc" / str(pid)).mkdir(parents=True)
        (root / "proc" / str(pid) / "cmdline").write_bytes(b"\0".join(argv) + b"\0")
    (root / "proc/self").mkdir()
    monkeypatch.setattr(containers, "MAX_CMDLINE", 40)
    found = containers.container_ports(QtsRoot(root))
    assert sorted(p.host_port for p in found.published) == [8080, 9090]
    monkeypatch.setattr(containers, "MAX_CMDLINE", 30)  # the first command line is cut before its port
    assert sorted(p.host_port for p in containers.container_ports(QtsRoot(root)).published) == [9090]
