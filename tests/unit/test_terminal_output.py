"""Device and config data never reach the terminal as control sequences (issue 15 item 10).

A rogue device on the LAN chooses its SSDP LOCATION (raw bytes: ESC included), its description's control
URL and its mapping table (bidi overrides and C1 controls fit in XML). Everything the CLI prints from such
data goes through one cleaner; an SSDP LOCATION with control characters is dropped when parsed. The
end-to-end test runs the real CLI in a subprocess inside a network namespace, next to a rogue router."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from exposure_guard.contracts.terminal import clean, json_for_terminal
from exposure_guard.hostilehttp import check_url
from exposure_guard.upnp.errors import HostileResponse
from exposure_guard.upnp.ssdp import discover
from tests.support.fakeigd import FakeIgd, FakeSsdp
from tests.support.paths import REPO, SRC
from tests.support.qts import LAB_ULINUX, ini_text, write_tree

# What must never reach a terminal: C0 controls but tab and newline, DEL, C1 controls, bidi overrides and
# isolates.
DANGEROUS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
HOSTILE = "a\x1b[31mb\x1b]0;pwned\x07c\x9b2Jd\u202eevil\u2066e\x7ff\x00g\u200bh"


def test_clean_escapes_every_control_visibly_and_keeps_ordinary_text():
    shown = clean(HOSTILE)
    assert not DANGEROUS.search(shown) and "\u200b" not in shown
    for visible in ("\\x1b", "\\x07", "\\x9b", "\\u202e", "\\u2066", "\\x7f", "\\x00", "\\u200b"):
        assert visible in shown, shown
    assert clean("NAS-Büro 東京 'TCP 8080 → 10.0.0.1:8080'\ttab") == "NAS-Büro 東京 'TCP 8080 → 10.0.0.1:8080'\ttab"
    assert clean("two\nlines") == "two\\nlines"  # one field never makes a line of its own


def test_json_for_the_terminal_escapes_the_same_characters_and_stays_the_same_json():
    document = {"location": HOSTILE, "name": "NAS-Büro"}
    text = json_for_terminal(json.dumps(document, ensure_ascii=False))
    assert not DANGEROUS.search(text) and "\\u202e" in text and "NAS-Büro" in text
    assert json.loads(text) == document


def test_urls_with_control_characters_or_spaces_are_refused():
    for url in ("http://10.0.0.1:5000/a\x1b[31m/rootDesc.xml", "http://10.0.0.1:5000/\u202e/x",
                "http://10.0.0.1:5000/a b", "http://10.0.0.1:5000/\x9b"):
        with pytest.raises(HostileResponse, match="control characters"):
            check_url(url)
    assert check_url("http://10.0.0.1:5000/rootDesc.xml?x=%1B") == "http://10.0.0.1:5000/rootDesc.xml?x=%1B"


def test_ssdp_answer_with_control_characters_in_location_is_dropped():
    with FakeIgd("igd2") as igd:
        location = igd.location.replace("/rootDesc.xml", "/a\x1b[31m\u00e2\x80\xae/rootDesc.xml")
        answer = ("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:x\r\n"
                  "LOCATION: %s\r\n\r\n" % location).encode("latin-1")
        with FakeSsdp(location, answer=answer) as responder:
            found = discover(5.0, interfaces=["127.0.0.1"], group=responder.address, quiet=0.3)
    assert found.answers == []
    assert any("control characters" in reason for reason in found.dropped), found.dropped
    assert not any(DANGEROUS.search(reason) for reason in found.dropped)


# -- the real CLI in a subprocess ---------------------------------------------------------------------------

def _forged_journal(state: Path) -> None:
    planned = {"change_id": "chg-\x1b[2Jforged", "event": "planned", "check_id": "service.telnet\x1b]0;pwned\x07",
               "kind": "config-key", "target": "/etc/config/uLinux.conf [LOGIN] TELNET\u202e Enable\x9b",
               "before": "TRUE\x1b[31m", "after": "FALSE\u2066", "at": "2024-01-01T00:00:00Z\x1b[5m",
               "params": {"file": "etc/config/uLinux.conf", "section": "LOGIN", "key": "TELNET Enable",
                          "value": "FALSE"}, "batch": "fix-x"}
    applied = {"change_id": planned["change_id"], "event": "applied", "params": {}, "at": "2024-01-01T00:00:01Z"}
    state.mkdir(parents=True, mode=0o700)
    (state / "journal.jsonl").write_text(json.dumps(planned) + "\n" + json.dumps(applied) + "\n")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exposure_guard", *args], capture_output=True, timeout=120,
                          cwd=str(REPO), env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


def test_history_and_undo_print_a_forged_journal_inert(tmp_path):
    root = write_tree(tmp_path / "qts", "[LOGIN]\nTELNET Enable = FALSE\n")
    _forged_journal(root / "var" / "exposure-guard")
    for args in (("history",), ("history", "--json"), ("undo", "--all")):
        result = _cli(*args, "--root", str(root))
        out = result.stdout.decode("utf-8")
        assert "chg-" in out, (args, out, result.stderr)
        assert not DANGEROUS.search(out), (args, out)
        assert not DANGEROUS.search(result.stderr.decode("utf-8", "replace")), (args, result.stderr)
    history = _cli("history", "--root", str(root)).stdout.decode("utf-8")
    assert "\\x1b[2J" in history and "\\u202e" in history  # shown, not swallowed


ROUTER_SCRIPT = r'''
import re, socket, sys
from http.server import BaseHTTPRequestHandler
from tests.support.fakeigd import FakeIgd, Mapping
from tests.support.net import HttpServer

lan, nas = sys.argv[1], sys.argv[2]
bad = "http://%s:5000/dev\x1b[31m\x1b]0;pwned\x07/rootDesc.xml" % lan
good = "http://%s:5000/rootDesc.xml" % lan
remote = "\u202e\u009b" + "1.2.3.4"  # bidi override and C1 CSI in the mapping's remote host
igd = FakeIgd("igd2", [Mapping(8080, nas, 8080, desc="admin", lease=0, remote=remote)])
igd.description = igd.description_bytes().replace(b"<controlURL>/ctl/IPConn</controlURL>",
                                                  b"<controlURL>IPConn</controlURL>")

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", 'text/xml; charset="utf-8"')
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._send(200, igd.description_bytes()) if self.path.endswith("/rootDesc.xml") else self._send(404, b"")
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8")
        if not self.path.endswith("IPConn"):
            return self._send(404, b"")
        action = (self.headers.get("SOAPAction") or "").strip('"').rsplit("#", 1)[-1]
        status, text = igd.soap(action, dict(re.findall(r"<(New\w+)>([^<]*)</New\w+>", body)), "")
        self._send(status, text.encode("utf-8"))

http = HttpServer(Handler, host="0.0.0.0", port=5000)
ssdp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ssdp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ssdp.bind(("0.0.0.0", 1900))
ssdp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton("239.255.255.250") + socket.inet_aton(lan))
print("rogue router ready", flush=True)
while True:
    data, peer = ssdp.recvfrom(4096)
    if not data.startswith(b"M-SEARCH"):
        continue
    for location in (bad, good):  # the hostile answer first, then an ordinary one for the same device
        ssdp.sendto(("HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n"
                     "USN: uuid:rogue\r\nSERVER: Rogue/1 UPnP/1.1\r\nLOCATION: %s\r\n\r\n" % location)
                    .encode("latin-1"), peer)
'''


@pytest.mark.slow
def test_rogue_router_bytes_never_reach_stdout_of_check_fix_and_history(tmp_path):
    from tests.support.netlab import Lab
    from tests.support.wait import wait_for

    reason = Lab.missing(igd=False)
    if reason:
        pytest.skip("lab: " + reason)
    root = write_tree(tmp_path / "qts", LAB_ULINUX, default=None)
    settings = tmp_path / "exposure-guard.ini"
    settings.write_text(ini_text({"agent": {"lan_addresses": Lab.NAS},
                                  "router": {"discover": "yes", "fix_scope": "all", "discovery_timeout": "10"}}))
    script = tmp_path / "rogue_router.py"
    script.write_text(textwrap.dedent(ROUTER_SCRIPT))
    with Lab(igd=False, stun=False, nas_http=None, nas_https=None) as lab:
        lab.spawn("router", ["env", "PYTHONPATH=%s:%s" % (REPO, SRC), sys.executable, "-u", str(script),
                             Lab.ROUTER_LAN, Lab.NAS], "rogue")
        wait_for("the rogue router", lambda: "rogue router ready" in lab.log("rogue"))
        lab.wait_port("router", 5000)
        outputs = {}
        ini = ("--settings", str(settings))
        for name, args in (("check", ("check", *ini, "--only", "router.upnp-mappings")),
                           ("fix", ("fix", *ini, "--only", "router.upnp-mappings", "--yes")),
                           ("history", ("history",)), ("undo", ("undo", *ini, "--all"))):
            result = lab.python("nas", "exposure_guard", args[0], "--root", str(root), *args[1:], timeout=120)
            outputs[name] = result.stdout + result.stderr
        log = lab.log("rogue")
    for name, text in outputs.items():
        assert not DANGEROUS.search(text), (name, text, log)
    assert "FAIL" in outputs["check"] and "router.upnp-mappings" in outputs["check"], outputs["check"]
    assert "applied chg-" in outputs["fix"] and "\\u202e" in outputs["fix"], outputs["fix"]
    assert "igd-mapping-delete" in outputs["history"] or "router.upnp-mappings" in outputs["history"]
    assert "re-added mapping" in outputs["undo"], outputs["undo"]
