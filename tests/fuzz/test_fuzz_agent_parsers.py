"""Every parser the agent feeds with data from a device or a file, given 10,000 generated inputs each.

What counts as a failure: any exception that is not the agent's own error family (ExposureGuardError: a
clear message the CLI shows), an input that takes longer than the per-input deadline (a hang), or a result
that breaks the parser's promise (a control URL on another host, a port outside 0-65535, a setcfg that does
not read back). The inputs mix structured near-misses (real headers, tags and keys with hostile values) with
raw bytes, because random bytes alone rarely get past the first line check.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
import string
import tempfile
from pathlib import Path
from typing import Dict, List
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exposure_guard import probeclient
from exposure_guard.errors import ExposureGuardError
from exposure_guard.fixes.journal import ChangeJournal
from exposure_guard.qts.config import ConfigDocument
from exposure_guard.qts.listeners import parse_proc_net_tcp
from exposure_guard.settings import load_settings
from exposure_guard.upnp import soap
from exposure_guard.upnp.description import parse_description
from exposure_guard.upnp.models import CONNECTION_SERVICES
from exposure_guard.upnp.ssdp import Discovery, _accept, parse_answer
from tests.support.fuzz import fuzz

pytestmark = pytest.mark.slow

HOSTILE_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
STATE_DIR = Path(tempfile.mkdtemp(prefix="eg-fuzz-"))  # one file rewritten per input: fast
NEWLINES = st.sampled_from([b"\n", b"\r\n", b"\r", b""])


# ------------------------------------------------------------------------------------ QTS config files
def _config_line() -> st.SearchStrategy[bytes]:
    name = st.text(alphabet=string.ascii_letters + string.digits + " _-.[]=#;\t", max_size=16)
    value = st.text(max_size=40)
    header = st.builds(lambda n, tail: ("[" + n + "]" + tail).encode("utf-8"), name, st.sampled_from(["", " junk", "]"]))
    pair = st.builds(lambda k, sp1, sp2, v: (k + sp1 + "=" + sp2 + v).encode("utf-8", "surrogatepass"),
                     name, st.sampled_from(["", " ", "\t"]), st.sampled_from(["", " ", "  "]), value)
    other = st.sampled_from([b"", b"# comment", b"; note", b"[", b"[]", b" = x", b"=", b"\xff\xfe=\x00", b"k = a=b"])
    return st.one_of(header, pair, other, st.binary(max_size=40))


@given(lines=st.lists(st.tuples(_config_line(), NEWLINES), max_size=24),
       section=st.text(alphabet=string.ascii_letters + " _", min_size=1, max_size=12),
       key=st.text(alphabet=string.ascii_letters + string.digits + " _", min_size=1, max_size=12),
       value=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=30))
@fuzz("qts config reader/writer")
def test_qts_config_reads_anything_and_setcfg_reads_back(lines: List[tuple], section: str, key: str, value: str) -> None:
    data = b"".join(line + end for line, end in lines)
    document = ConfigDocument(data)
    for entry in document.entries:
        assert 0 <= entry.line_index < len(document.lines)
        assert "\n" not in entry.value and "\r" not in entry.value
    section, key, value = section.strip() or "S", key.strip() or "k", value.strip()
    # What QTS's setcfg promises: the key reads back as written, and every other key keeps its value.
    before: Dict[tuple, str] = {}
    for entry in document.entries:  # a repeated key: the first one is the one QTS reads
        before.setdefault((entry.section.lower(), entry.key.lower()), entry.value)
    after_doc = ConfigDocument(document.with_value(section, key, value))
    assert after_doc.get(section, key) == value
    for (sec, k), old in before.items():
        if (sec, k) != (section.lower(), key.lower()):
            found = after_doc.find(sec, k)
            assert found is not None and found.value == old, (sec, k)
    removed = ConfigDocument(after_doc.without_key(section, key))
    assert len(removed.entries) == len(after_doc.entries) - 1


# ------------------------------------------------------------------------------------ SSDP answers
SENDER = "192.0.2.1"


def _ssdp_answer() -> st.SearchStrategy[bytes]:
    location = st.one_of(
        st.just("http://%s:5000/rootDesc.xml" % SENDER),
        st.builds(lambda host, path: "http://%s/%s" % (host, path), st.sampled_from([SENDER, "198.51.100.7", "[::1]", "", "x"]),
                  HOSTILE_TEXT),
        st.builds(lambda s, t: s + t, st.sampled_from(["file://", "javascript:", "http://", "https://", "gopher://"]),
                  HOSTILE_TEXT),
        HOSTILE_TEXT,
    )
    header = st.tuples(st.sampled_from(["LOCATION", "Location", "ST", "USN", "SERVER", "CACHE-CONTROL", "X"]),
                       st.one_of(location, HOSTILE_TEXT))
    status = st.sampled_from(["HTTP/1.1 200 OK", "HTTP/1.0 200", "NOTIFY * HTTP/1.1", "HTTP/1.1 404 Not Found", "",
                              "http/1.1 200"])
    sep = st.sampled_from(["\r\n", "\n"])
    return st.builds(lambda s, hs, nl: (s + nl + nl.join("%s:%s" % h for h in hs) + nl + nl).encode("utf-8", "surrogatepass"),
                     status, st.lists(header, max_size=8), sep)


@given(data=st.one_of(_ssdp_answer(), st.binary(max_size=600)))
@fuzz("ssdp answer")
def test_ssdp_answer_never_crashes_and_follows_only_the_sender(data: bytes) -> None:
    headers = parse_answer(data)
    if headers is not None:
        assert all(isinstance(k, str) and isinstance(v, str) and len(v) <= 1024 for k, v in headers.items())
    result = Discovery()
    answer = _accept(data, SENDER, "192.0.2.10", result)
    if answer is not None:
        parts = urlsplit(answer.location)
        assert parts.scheme.lower() in ("http", "https") and parts.hostname == SENDER
        assert not any(ord(c) < 32 or ord(c) == 127 for c in answer.location)


# ------------------------------------------------------------------------------------ device descriptions
LOCATION = "http://192.0.2.1:5000/rootDesc.xml"
TAGS = ["root", "device", "deviceList", "serviceList", "service", "serviceType", "controlURL", "URLBase",
        "deviceType", "friendlyName", "UDN", "manufacturer", "modelName", "x"]
URLISH = st.one_of(
    st.sampled_from(["/ctl/IPConn", "ctl", "http://192.0.2.1:5000/ctl", "http://198.51.100.9/ctl", "//198.51.100.9/c",
                     "file:///etc/passwd", "javascript:alert(1)", "http://192.0.2.1:99999/x", "http://[::1/x", "", " "]),
    HOSTILE_TEXT)


@st.composite
def _xml_tree(draw: st.DrawFn, depth: int = 0) -> str:
    tag = draw(st.sampled_from(TAGS))
    ns = draw(st.sampled_from(["", ' xmlns="urn:schemas-upnp-org:device-1-0"']))
    if tag == "serviceType":
        text = draw(st.one_of(st.sampled_from(CONNECTION_SERVICES), HOSTILE_TEXT))
    elif tag in ("controlURL", "URLBase"):
        text = draw(URLISH)
    else:
        text = draw(HOSTILE_TEXT)
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    # Wide near the root, narrow below: a handful of elements per input keeps 10,000 inputs fast.
    children = draw(st.lists(_xml_tree(depth + 1), max_size=(3, 2, 1, 1)[depth])) if depth < 4 else []
    return "<%s%s>%s%s</%s>" % (tag, ns, escaped, "".join(children), tag)


HOSTILE_XML = st.sampled_from([
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><root>&b;</root>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><root>&x;</root>',
    b"<root>" + b"<device>" * 200 + b"</device>" * 200 + b"</root>",
    b"<root><device><serviceList><service>" * 3, b"\xef\xbb\xbf<root/>", b"<?xml version='1.0' encoding='utf-16'?><root/>",
])


@given(data=st.one_of(st.builds(lambda t: ("<root>%s</root>" % t).encode("utf-8", "surrogatepass"), _xml_tree()),
                      st.builds(lambda t: t.encode("utf-8", "surrogatepass"), _xml_tree()), HOSTILE_XML,
                      st.binary(max_size=300)))
@fuzz("device description")
def test_device_description_never_crashes_and_never_leaves_the_host(data: bytes) -> None:
    try:
        gateway = parse_description(data, LOCATION)
    except ExposureGuardError:
        return
    for service in gateway.services:
        parts = urlsplit(service.control_url)
        assert parts.scheme.lower() in ("http", "https") and parts.hostname == "192.0.2.1", service.control_url


# ------------------------------------------------------------------------------------ SOAP answers
ACTION = "GetGenericPortMappingEntry"
ARG_NAMES = ["NewExternalPort", "NewProtocol", "NewInternalPort", "NewInternalClient", "NewEnabled",
             "NewPortMappingDescription", "NewLeaseDuration", "NewRemoteHost", "NewExternalIPAddress", "errorCode"]
ARG_VALUES = st.one_of(st.sampled_from(["0", "65535", "65536", "-1", " 80 ", "8080", "TCP", "udp", "1", "false", "no",
                                        "192.168.1.10", "4294967296", "１２３", "1_000", "", "\x1b[31m"]), HOSTILE_TEXT)


def _soap_body() -> st.SearchStrategy[bytes]:
    args = st.dictionaries(st.sampled_from(ARG_NAMES), ARG_VALUES, max_size=9)

    def envelope(kind: str, values: Dict[str, str]) -> bytes:
        inner = "".join("<%s>%s</%s>" % (k, v.replace("&", "&amp;").replace("<", "&lt;"), k) for k, v in values.items())
        if kind == "fault":
            body = ("<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>"
                    "<UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\">%s</UPnPError></detail></s:Fault>" % inner)
        elif kind == "response":
            body = "<u:%sResponse xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">%s</u:%sResponse>" % (
                ACTION, inner, ACTION)
        else:
            body = inner
        return ("<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>%s"
                "</s:Body></s:Envelope>" % body).encode("utf-8", "surrogatepass")

    return st.builds(envelope, st.sampled_from(["fault", "response", "bare"]), args)


@given(data=st.one_of(_soap_body(), HOSTILE_XML, st.binary(max_size=300)), status=st.sampled_from([200, 500, 402, 0, 999]))
@fuzz("soap answer")
def test_soap_answer_never_crashes_and_ports_stay_in_range(data: bytes, status: int) -> None:
    try:
        args = soap.parse_response(data, status, ACTION, "http://192.0.2.1/ctl")
        mapping = soap.mapping_from_args(args)
    except ExposureGuardError:
        return
    assert 0 <= mapping.external_port <= 65535 and 0 <= mapping.internal_port <= 65535
    assert mapping.protocol in ("TCP", "UDP") and 0 <= mapping.lease_duration < 2 ** 32


@given(entries=st.lists(st.dictionaries(st.sampled_from(ARG_NAMES), ARG_VALUES, max_size=9), max_size=6),
       raw=st.one_of(st.none(), HOSTILE_TEXT))
@fuzz("soap port listing")
def test_port_listing_never_crashes(entries: List[Dict[str, str]], raw: object) -> None:
    if isinstance(raw, str):
        listing = raw
    else:
        listing = "<p:PortMappingList xmlns:p=\"urn:schemas-upnp-org:gw:WANIPConnection\">%s</p:PortMappingList>" % "".join(
            "<p:PortMappingEntry>%s</p:PortMappingEntry>" % "".join(
                "<p:%s>%s</p:%s>" % (k, v.replace("&", "&amp;").replace("<", "&lt;"), k) for k, v in e.items())
            for e in entries)
    try:
        mappings = soap.parse_port_listing(listing, "http://192.0.2.1/ctl")
    except ExposureGuardError:
        return
    assert all(0 <= m.external_port <= 65535 for m in mappings)


# ------------------------------------------------------------------------------------ journal lines
JOURNAL_KEYS = ["change_id", "event", "check_id", "kind", "target", "before", "after", "at", "params", "batch", "detail",
                "file", "backup"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), HOSTILE_TEXT)
# One level of nesting is enough to reach every type check (deeper trees only cost generation time).
JSON_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3), st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3))
JOURNAL_EVENT = st.fixed_dictionaries(
    {"change_id": st.one_of(st.sampled_from(["c1", "c2"]), JSON_VALUES),
     "event": st.one_of(st.sampled_from(["planned", "applied", "failed", "undone"]), JSON_VALUES)},
    optional={k: JSON_VALUES for k in JOURNAL_KEYS[2:]})
JOURNAL_LINE = st.one_of(JOURNAL_EVENT.map(lambda e: json.dumps(e).encode("utf-8")),
                         JSON_VALUES.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60))


@given(lines=st.lists(JOURNAL_LINE, max_size=8))
@fuzz("journal lines")
def test_journal_reader_never_crashes(lines: List[bytes]) -> None:
    (STATE_DIR / "journal.jsonl").write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    try:
        records = ChangeJournal(STATE_DIR).changes()
    except ExposureGuardError:
        return
    for record in records:
        assert isinstance(record.change_id, str) and isinstance(record.params, dict)


def teardown_module() -> None:
    shutil.rmtree(STATE_DIR, ignore_errors=True)


# ------------------------------------------------------------------------------------ /proc/net/tcp
PROC_FIELD = st.one_of(st.sampled_from(["0100007F:1F90", "00000000:0016", "0A", "00000000000000000000000000000000:01BB",
                                        "GG:1", ":", "0100007F:", "FFFFFFFFFFFF:FFFFFFFF", "0000000:0050"]),
                       st.text(alphabet="0123456789ABCDEFabcdef:xg ", max_size=40))


@given(rows=st.lists(st.lists(PROC_FIELD, max_size=6), max_size=6), family=st.sampled_from(["tcp", "tcp6"]),
       raw=st.one_of(st.none(), HOSTILE_TEXT))
@fuzz("/proc/net/tcp listeners")
def test_proc_net_tcp_never_crashes(rows: List[List[str]], family: str, raw: object) -> None:
    text = raw if isinstance(raw, str) else "  sl  local_address rem_address   st\n" + "\n".join(
        "%d: %s" % (i, " ".join(row)) for i, row in enumerate(rows))
    for listener in parse_proc_net_tcp(text, family):
        assert 0 <= listener.port <= 65535, listener
        ipaddress.ip_address(listener.address)


# ------------------------------------------------------------------------------------ prober answers
PROBE_NONCE = "0123456789abcdef0123456789abcdef"
PROBE_ANSWER = {
    "schema": "exposure-guard/prober/v1", "nonce": PROBE_NONCE, "observed_address": "198.51.100.1", "family": "ipv4",
    "via_proxy": False, "lab_mode": True, "duration_ms": 41, "prober_version": "1.0.0", "ignored_fields": [],
    "ports": [{"port": 443, "state": "open", "connect_ms": 0.4, "banner": None, "error": None,
               "tls": {"sha256": "ab" * 32, "error": None},
               "http": {"status": 302, "server": "http server 2.0", "location": "/cgi-bin/", "title": ""}},
              {"port": 22, "state": "open", "connect_ms": 0.3, "tls": None, "http": None, "error": None,
               "banner": "SSH-2.0-OpenSSH_8.0"}],
    "upnp": {"exposed": False, "error": None, "ssdp": {"answered": False, "port": 1900}, "igd": {"found": False}},
}
ANSWER_PATHS = [("schema",), ("nonce",), ("observed_address",), ("family",), ("duration_ms",), ("lab_mode",),
                ("ignored_fields",), ("ports",), ("upnp",), ("upnp", "ssdp"), ("upnp", "igd"), ("upnp", "exposed"),
                ("ports", 0), ("ports", 0, "port"), ("ports", 0, "state"), ("ports", 0, "tls"), ("ports", 0, "http"),
                ("ports", 0, "http", "title"), ("ports", 1, "banner"), ("ports", 1, "port")]


@given(changes=st.lists(st.tuples(st.sampled_from(ANSWER_PATHS), JSON_VALUES), max_size=4),
       raw=st.one_of(st.none(), st.binary(max_size=80)))
@fuzz("prober answer (agent side)")
def test_prober_answer_validation_never_crashes(changes: List[tuple], raw: object) -> None:
    document: object = copy.deepcopy(PROBE_ANSWER)
    for path, value in changes:
        target = document
        try:
            for step in path[:-1]:
                target = target[step]  # type: ignore[index]
            target[path[-1]] = value  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            continue
    if isinstance(raw, bytes):
        document = probeclient._decode(raw)
    try:
        answer = probeclient.validate_answer(document, PROBE_NONCE, [443, 22])
    except probeclient.ProberError:
        return
    assert set(answer.ports) == {443, 22}
    for result in answer.ports.values():
        for text in (result["banner"], result["error"]):
            assert text is None or not any(ord(c) < 32 for c in text)


# ------------------------------------------------------------------------------------ the agent's settings file
SETTING_LINES = st.one_of(
    st.builds(lambda s: "[%s]" % s, st.sampled_from(["agent", "router", "reachability", "checks", "server", "x", ""])),
    st.builds(lambda k, v: "%s = %s" % (k, v), st.sampled_from(["mode", "interval", "discover", "igd", "url", "local_probe",
                                                              "timeout", "router.upnp-mappings", "nope", ""]),
              st.one_of(st.sampled_from(["report", "fix", "auto", "yes", "no", "1h", "0", "-5", "http://127.0.0.1:1",
                                         "99999999999999999999", "1e9", "off"]), HOSTILE_TEXT)),
    HOSTILE_TEXT)


@given(lines=st.lists(SETTING_LINES, max_size=10), raw=st.one_of(st.none(), st.binary(max_size=120)))
@fuzz("agent settings file")
def test_settings_file_gives_a_clear_error_or_settings(lines: List[str], raw: object) -> None:
    data = raw if isinstance(raw, bytes) else "\n".join(lines).encode("utf-8", "surrogatepass")
    (STATE_DIR / "exposure-guard.ini").write_bytes(data)
    try:
        load_settings(STATE_DIR / "exposure-guard.ini", environ={})
    except ExposureGuardError as exc:
        assert str(exc)


# ------------------------------------------------------------------------------------ the other doors
from exposure_guard.errors import Unknowable  # noqa: E402
from exposure_guard.facts.apps import judge_app, load_table, parse_app_version  # noqa: E402
from exposure_guard.facts.containers import ContainerPorts, _container, parse_docker_proxy  # noqa: E402
from exposure_guard.facts.fileservices import ftp_tls, snmp_communities  # noqa: E402
from exposure_guard.facts.netfilter import judge_chain  # noqa: E402
from exposure_guard.qts.root import QtsRoot  # noqa: E402

DOORS_ROOT = QtsRoot(STATE_DIR / "doors-root")
RULE_WORDS = st.sampled_from(["-A", "QUFIREWALL", "-s", "-i", "lo", "-j", "ACCEPT", "DROP", "REJECT", "RETURN", "!",
                              "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "set", "--match-set", "10.0.0.0/8",
                              "192.168.1.0/24", "0.0.0.0/0", "::/0", "fe80::/10", "203.0.113.0/24", "-p", "tcp",
                              "--dport", "8080", '"', "'", "\\", ":QUFIREWALL", "-N"])
CONF_LINES = st.one_of(st.text(max_size=60), st.builds(" ".join, st.lists(st.sampled_from(
    ["rocommunity", "rwcommunity6", "com2sec", "public", "private", "s3cret", "default", "TLSEngine", "TLSRequired",
     "on", "off", "PassivePorts", "55536", "56559", "<Anonymous", "/share>", "#", "\t", "x" * 200]), max_size=6)))


@given(lines=st.lists(st.one_of(st.builds(lambda w: "-A QUFIREWALL " + " ".join(w), st.lists(RULE_WORDS, max_size=8)),
                                HOSTILE_TEXT), max_size=12))
@fuzz("iptables-save QUFIREWALL chain")
def test_firewall_chain_reader_never_crashes(lines: List[str]) -> None:
    verdict = judge_chain("*filter\n:QUFIREWALL - [0:0]\n" + "\n".join(lines) + "\nCOMMIT\n")
    assert verdict.lan_only in (True, False, None) and verdict.reason
    if verdict.lan_only:  # never "LAN only" without a final DROP/REJECT of everything
        assert any(line.split()[2:] in (["-j", "DROP"], ["-j", "REJECT"]) for line in lines if line.startswith("-A "))


COMMUNITY_LINES = st.builds(lambda directive, community, tail: " ".join([directive, community] + tail),
                            st.sampled_from(["rocommunity", "rwcommunity", "rocommunity6", "com2sec name default"]),
                            st.builds(lambda t: "c0mm" + t, st.text(alphabet=string.ascii_letters, max_size=8)),
                            st.lists(st.sampled_from(["default", "10.0.0.0/8", ".1.3.6", "-V", "all"]), max_size=2))


@given(lines=st.lists(st.one_of(CONF_LINES, COMMUNITY_LINES), max_size=16),
       raw=st.one_of(st.none(), st.binary(max_size=200)))
@fuzz("snmpd.conf and proftpd.conf")
def test_service_configs_never_crash_and_never_leak_a_community(lines: List[str], raw: object) -> None:
    data = raw if isinstance(raw, bytes) else "\n".join(lines).encode("utf-8", "surrogatepass")
    for rel in ("etc/config/snmpd.conf", "etc/config/proftpd.conf"):
        target = DOORS_ROOT.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    try:
        communities = snmp_communities(DOORS_ROOT) or []
    except Unknowable:
        communities = []
    assert "c0mm" not in json.dumps(communities)  # a community is a password: never echoed
    assert all(len(c["source"]) <= 64 for c in communities)
    found = ftp_tls(DOORS_ROOT)
    assert found is not None and found["tls_engine"] in (True, False, None)


@given(argv=st.lists(st.one_of(st.sampled_from(["docker-proxy", "-proto", "tcp", "udp", "-host-ip", "0.0.0.0",
                                                 "-host-port", "-container-port", "8080", "0", "99999", "-1",
                                                 "-container-ip"]), HOSTILE_TEXT), max_size=12),
       state=st.one_of(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), HOSTILE_TEXT),
                                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(HOSTILE_TEXT, inner, max_size=4)),
                                    max_leaves=20),
                       st.builds(lambda port, host: {"PortBindings": {port: [{"HostIp": host, "HostPort": port}]}},
                                 HOSTILE_TEXT, HOSTILE_TEXT)))
@fuzz("docker-proxy command lines and Docker state")
def test_container_ports_never_crash_and_stay_in_range(argv: List[str], state: object) -> None:
    item = parse_docker_proxy(["docker-proxy"] + argv)
    assert item is None or 0 < item.host_port < 65536
    folder = STATE_DIR / "container"
    folder.mkdir(exist_ok=True)
    (folder / "hostconfig.json").write_text(json.dumps(state))
    found = ContainerPorts()
    _container(DOORS_ROOT, str(folder), found)
    assert all(0 < p.host_port < 65536 and len(p.host_ip) <= 64 for p in found.published)


APP_ADVISORIES = load_table()["advisories"]


@given(text=st.one_of(HOSTILE_TEXT, st.builds(".".join, st.lists(st.sampled_from(["0", "1", "6", "16", "0415", "x",
                                                                                    "", "999999999"]), max_size=6))))
@fuzz("app versions")
def test_app_versions_never_crash(text: str) -> None:
    version = parse_app_version(text)
    for advisory in APP_ADVISORIES:
        verdict, why = judge_app(version, advisory)
        assert verdict in ("not-affected", "fixed", "missing", "unknown") and why
