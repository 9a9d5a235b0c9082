"""The January 2022 QNAP advisory, end to end, in the network-namespace lab: an exposed NAS is found,
fixed and reported to the fleet server, by the agent installed from the built .qpkg.

Run as root from the repository root::

    python3 -m tests.lab.advisory              # the story, step by step, with timings
    python3 -m tests.lab.advisory --keep       # keep the work directory (logs, database, QTS tree)
    python3 -m tests.lab.advisory --update-docs   # also copy the screenshot to docs/img/advisory-dashboard.png

What it builds (nothing outside the lab's own namespaces and loopback is ever contacted):

* ``./build.sh`` → ``ExposureGuard_<ver>.qpkg``; the package file is run with busybox sh inside the
  simulated QTS of tests/support/qts_rig.py (App Center's "install manually"), into a QTS tree whose
  Auto Router Configuration is on (``etc/config/upnpc.conf [UPnP_Global] Enable = TRUE``) and whose web
  admin is on 8080/443. Every agent command afterwards is the installed service script
  ``<volume>/.qpkg/ExposureGuard/exposure-guard.sh`` running the vendored agent (``python3 -S``, only the
  package's lib/ on the path) inside the ``nas`` namespace, against that tree.
* the netlab topology (tests/support/netlab.py): ``wan`` (the internet: the callback prober in lab mode, the
  fleet server ``exposure-guard-server`` on SQLite, a webhook receiver on the wan host's loopback),
  ``router`` (real miniupnpd + NAT, plus ONE static DNAT forward wan:443 → nas:443 that is not UPnP),
  ``nas`` (HTTP admin on 8080, HTTPS admin on 443). The "ARC" mappings 8080 → nas:8080 and 8443 → nas:443
  are made with ``upnpc`` from the nas namespace, as QTS's upnpcd would have.

The story: 1. check → EXPOSED; 2. ``run --once`` in mode fix → ARC off, mappings deleted, still exposed
through the static forward; 3. the owner removes the forward → OK; 4. the dashboard (headless Chromium)
shows exposed → ok with the history, the webhook receiver got both transitions; 5. ``undo --all``
restores upnpc.conf byte for byte and the router mappings.

tests/lab/test_advisory.py runs the same scenario under pytest and asserts each step.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tests.support.netlab import Lab
from tests.support.paths import QTS_TREES, REPO, SRC
from tests.support.qpkg_build import run_build
from tests.support.qts import write_tree
from tests.support.reachlab import start_prober
from tests.support.wait import DEADLINE, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SERVER_PORT = 8000
HOOK_PORT = 9000
ADMIN_PASSWORD = "advisory lab password"
VOLUME = "/share/CACHEDEV1_DATA"
PKG_DIR = VOLUME + "/.qpkg/ExposureGuard"
ARC = [("8080", "8080", "ARC myQNAPcloud QTS web admin"), ("8443", "443", "ARC myQNAPcloud QTS web admin SSL")]
STATIC_FORWARD = (443, Lab.NAS, 443)
UPNPC_LINE = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\d+)->([\d.]+):(\d+)\s+'([^']*)'", re.M)

# The firmware is current (QTS 5.2.7.3256 build 20250913, in the key layout real boxes write): the advisory
# is about exposure, not missing patches.
ULINUX = """[System]
Server Name = OFFICE-NAS
Model = TS-X64
Version = 5.2.7
Number = 3256
Build Number = 20250913
Web Access Port = 8080
Force SSL = 1

[Stunnel]
Enable = 1
Port = 443

[LOGIN]
SSH Enable = FALSE
SSH Port = 22
TELNET Enable = FALSE

[QWEB]
Enable = 0
Port = 80

[Misc]
Autorun = FALSE

[Ban Engine]
Ban Enabled = 1
Account Ban Enabled = 1

[Bonjour Service]
Web = 0
HTTPS = 0
SAMBA = 0
SSH = 0
FTP = 0
UPNP = 0
QMobile = 0
QNAP = 0
"""
# ARC on, as QTS writes it (a comment line and odd spacing: undo must give back these exact bytes).
UPNPC_CONF = b"; myQNAPcloud Auto Router Configuration\n[UPnP_Global]\nEnable = TRUE\nIGD Refresh = 300\n\n"
DEFAULT_ULINUX = "[System]\nModel = TS-X64\nVersion = 5.2.7\nNumber = 3256\nBuild Number = 20250913\n"
PLATFORM = "[System]\nPLATFORM = X86_JASPERLAKE\nDISPLAY_NAME = TS-464\n"  # the name on the box
SHADOW = "admin:!$1$disabled$x:19000:0:99999:7:::\nowner:$6$abc$def:19000:0:99999:7:::\n"

WEBHOOK_RECEIVER = r'''
import http.server, json, sys, time
port, log = int(sys.argv[1]), sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
        with open(log, "a") as out:
            out.write(json.dumps({"at": time.time(), "path": self.path, "headers": dict(self.headers),
                                  "body": body.decode("utf-8", "replace")}) + "\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

SCREENSHOT = r'''
import json, sys
from playwright.sync_api import sync_playwright
url, password, device_id, out_png, chromium = sys.argv[1:6]
args = json.loads(sys.argv[6])
seen = {}
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=args, headless=True)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url + "/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_selector("[data-count=exposed]")
        seen["counts"] = {s: page.inner_text("[data-count=%s]" % s) for s in ("exposed", "at_risk", "ok", "total")}
        seen["fleet"] = page.inner_text("#devices")
        page.goto(url + "/devices/" + device_id)
        page.wait_for_selector("#device-name")
        seen["device_name"] = page.inner_text("#device-name")
        seen["device_page"] = page.inner_text("main")
        page.screenshot(path=out_png, full_page=True)
    finally:
        browser.close()
print(json.dumps(seen))
'''


# ---------------------------------------------------------------------------------------------- helpers
def missing() -> Optional[str]:
    """Why this machine cannot run the scenario (None when it can)."""
    reason = Lab.missing()
    if reason:
        return reason
    from tests.support.qts_rig import find_python38

    for tool in ("upnpc", "busybox", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return "%s is not installed (apt-get install miniupnpc busybox util-linux)" % tool
    if find_python38() is None:
        return "pyenv Python 3.8 is not installed (the simulated QTS's Python3 app for the .qpkg install)"
    if not os.path.exists(CHROMIUM):
        return "Debian chromium is not installed at %s" % CHROMIUM
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "python playwright is not installed (pip install playwright; no browser download needed)"
    for module in ("fastapi", "uvicorn", "sqlalchemy"):
        try:
            __import__(module)
        except ImportError:
            return "the server extra is not installed (%s missing)" % module
    return None


def set_ini(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` of an ini text, replacing a commented-out ``;key =`` line too."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "[%s]" % section.lower()), None)
    if start is None:
        return text.rstrip("\n") + "\n\n[%s]\n%s = %s\n" % (section, key, value)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("[")), len(lines))
    pattern = re.compile(r"^\s*[;#]?\s*%s\s*=" % re.escape(key), re.I)
    for i in range(start + 1, end):
        if pattern.match(lines[i]):
            lines[i] = "%s = %s" % (key, value)
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, "%s = %s" % (key, value))
    return "\n".join(lines) + "\n"


def upnpc_mappings(text: str) -> List[Tuple[str, int, str, int, str]]:
    return sorted((p, int(e), c, int(i), d) for p, e, c, i, d in UPNPC_LINE.findall(text))


def finding(report: Dict[str, Any], check_id: str) -> Dict[str, Any]:
    for item in report.get("findings", []):
        if item.get("id") == check_id:
            return item
    return {}


def port_verdicts(report: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    admin = finding(report, "reachability.admin")
    return {"%s:%d" % (v["family"], v["port"]): v for v in admin.get("evidence", {}).get("ports", [])}


def verdict(report: Dict[str, Any]) -> str:
    if report.get("summary", {}).get("exposed"):
        return "EXPOSED"
    if any(f["status"] == "fail" and f["severity"] != "info" for f in report.get("findings", [])):
        return "AT RISK"
    return "OK"


def wrap(text: str, indent: str = "      ") -> str:
    return textwrap.fill(text, 108, initial_indent=indent, subsequent_indent=indent + "  ")


def verify_signature(secret: str, headers: Dict[str, str], body: str) -> bool:
    lower = {k.lower(): v for k, v in headers.items()}
    stamp = lower.get("x-exposureguard-timestamp", "")
    mac = hmac.new(secret.encode(), (stamp + ".").encode() + body.encode("utf-8"), hashlib.sha256).hexdigest()
    return hmac.compare_digest(lower.get("x-exposureguard-signature", ""), "sha256=" + mac)


class ScenarioError(AssertionError):
    pass


# ---------------------------------------------------------------------------------------------- scenario
class Advisory:
    """The lab and the story. ``setup()`` then ``step1()`` … ``step5()``; ``close()`` always (or ``with``)."""

    def __init__(self, out: Callable[[str], None] = print, work: Optional[Path] = None,
                 artifacts: Optional[Path] = None, python: str = "/usr/bin/python3") -> None:
        self.out = out
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="eg-advisory-"))
        self.artifacts = Path(artifacts) if artifacts else REPO / "artifacts"
        self.python = python
        self.lab: Optional[Lab] = None
        self.timings: List[Tuple[str, float]] = []  # (what, seconds) of every agent command
        self.step_seconds: Dict[str, float] = {}
        self.reports: Dict[str, Dict[str, Any]] = {}
        self.facts: Dict[str, Any] = {}
        self.started = time.monotonic()

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> Advisory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.lab is not None:
            self.lab.down()
            self.lab = None

    def say(self, text: str = "") -> None:
        self.out(text)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    # -- paths ---------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The fake QTS root (the simulated NAS the package was installed into)."""
        return self.work / "nas" / "root"

    @property
    def qpkg_root(self) -> Path:
        return self.root / PKG_DIR.lstrip("/")

    @property
    def settings_path(self) -> Path:
        return self.qpkg_root / "etc" / "exposure-guard.ini"

    @property
    def server_url(self) -> str:
        return "http://%s:%d" % (Lab.WAN_HOST, SERVER_PORT)

    # -- the agent, as installed -----------------------------------------------------------------------
    def agent(self, label: str, *args: str, root_flag: bool = True) -> Tuple[subprocess.CompletedProcess, float]:
        """``<qpkg>/exposure-guard.sh cli ARGS`` inside ns nas, clean environment; returns (result, seconds)."""
        assert self.lab is not None
        argv = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
                "EXPOSURE_GUARD_PYTHON=%s" % self.python, "EXPOSURE_GUARD_QTS_ROOT=%s" % self.root,
                "/bin/sh", str(self.qpkg_root / "exposure-guard.sh"), "cli"] + list(args[:1])
        if root_flag:
            argv += ["--root", str(self.root)]
        argv += list(args[1:])
        started = time.monotonic()
        result = self.lab.run("nas", argv, check=False, timeout=240)
        seconds = time.monotonic() - started
        self.timings.append((label, seconds))
        return result, seconds

    def last_report(self) -> Dict[str, Any]:
        return json.loads((self.qpkg_root / "var" / "last-report.json").read_text("utf-8"))

    def upnpc_list(self) -> List[Tuple[str, int, str, int, str]]:
        assert self.lab is not None
        return upnpc_mappings(self.lab.upnpc("nas", "-l").stdout)

    def api(self, path: str) -> Any:
        """GET the server's read API from ns wan with the API token."""
        assert self.lab is not None
        result = self.lab.run("wan", ["curl", "-sS", "-m", "10", "-H", "Authorization: Bearer %s" % self.facts["api_token"],
                                      self.server_url + path], check=True)
        return json.loads(result.stdout)

    def webhook_events(self) -> List[Dict[str, Any]]:
        path = self.work / "webhook.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]

    def wait_for_webhooks(self, kinds: Sequence[str], timeout: float = DEADLINE) -> List[str]:
        """The webhook events received once all of ``kinds`` arrived, or when ``timeout`` passed first."""

        def got() -> List[str]:
            return [e["headers"].get("X-ExposureGuard-Event", "") for e in self.webhook_events()]

        try:
            wait_for("webhooks %s" % ", ".join(kinds), lambda: all(k in got() for k in kinds), timeout=timeout)
        except AssertionError:
            pass  # the caller reports what did arrive
        return got()

    # -- setup ---------------------------------------------------------------------------------------
    def server_cli(self, *args: str) -> str:
        env = dict(os.environ, PYTHONPATH=str(SRC), EXPOSURE_GUARD_ADMIN_PASSWORD=ADMIN_PASSWORD)
        result = subprocess.run([sys.executable, "-m", "exposure_guard_server"] + list(args), capture_output=True,
                                text=True, env=env, timeout=120)
        if result.returncode != 0:
            raise ScenarioError("exposure-guard-server %s failed: %s%s" % (" ".join(args), result.stdout, result.stderr))
        return result.stdout

    def build(self) -> Path:
        built = run_build(self.work / "dist")
        package, seconds = built.path, built.seconds
        digest = hashlib.sha256(package.read_bytes()).hexdigest()
        self.facts.update(qpkg=package, qpkg_size=package.stat().st_size, qpkg_sha256=digest, build_seconds=seconds)
        self.say("  built %s (%d bytes, sha256 %s…) with ./build.sh in %.2f s"
                 % (package.name, package.stat().st_size, digest[:16], seconds))
        return package

    def nas_tree(self) -> Path:
        return write_tree(self.work / "qts-config", ULINUX, DEFAULT_ULINUX,
                          files={"etc/config/upnpc.conf": UPNPC_CONF, "etc/shadow": SHADOW, "etc/platform.conf": PLATFORM,
                                 # QTS's own scheduled tasks, as every box has them
                                 "etc/config/crontab": (QTS_TREES / "hardened/etc/config/crontab").read_text()})

    def install(self, package: Path) -> None:
        """Run the .qpkg with busybox sh in the simulated QTS, as App Center's manual install does."""
        from tests.support.qts_rig import Rig, find_python38

        base = self.work / "nas"
        base.mkdir()
        started = time.monotonic()
        with Rig(base, shell="busybox", python=find_python38(), nas_tree=self.nas_tree()) as rig:
            shutil.copy(str(package), str(rig.path(VOLUME + "/Public/")))
            proc = rig.run("sh %s/Public/%s" % (VOLUME, package.name))
            if proc.returncode != 10:
                raise ScenarioError("the .qpkg install exited %d (expected 10):\n%s" % (proc.returncode, proc.stdout))
            stopped = rig.run("/etc/init.d/exposure-guard.sh stop")
            registered = rig.ini("/etc/config/qpkg.conf").get("ExposureGuard", {})
        seconds = time.monotonic() - started
        if registered.get("Install_Path") != PKG_DIR:
            raise ScenarioError("qpkg.conf has no [ExposureGuard] Install_Path %s: %r" % (PKG_DIR, registered))
        self.facts.update(install_seconds=seconds, install_stop=stopped.stdout.strip())
        self.say("  installed with `sh %s` (busybox sh, simulated QTS): exit 10 in %.2f s; registered in "
                 "qpkg.conf, Install_Path %s" % (package.name, seconds, PKG_DIR))
        # The NAS, as the agent will see it from ns nas: /proc/net is that namespace's own sockets.
        (self.root / "proc").mkdir(exist_ok=True)
        os.symlink("/proc/net", str(self.root / "proc" / "net"))
        (self.root / "var").mkdir(exist_ok=True)
        (self.root / "var" / "MacAddress").write_text("[MAC]\neth0 = 24:5E:BE:4A:0B:1C\n")
        self.facts["upnpc_conf_before"] = (self.root / "etc/config/upnpc.conf").read_bytes()

    def configure(self, prober_url: str) -> None:
        """What the owner sets in <qpkg>/etc/exposure-guard.ini."""
        text = self.settings_path.read_text("utf-8")
        for section, key, value in (
            ("agent", "mode", "fix"),
            ("agent", "lan_addresses", Lab.NAS),
            ("router", "discover", "yes"),
            ("reachability", "prober_url", prober_url),
            ("reachability", "local_probe", "yes"),  # the tree stands for the NAS this namespace is
            ("server", "url", self.server_url),
            # The owner keeps the default admin ports on the LAN; the advisory is about exposure.
            ("checks", "admin.default-ports", "ignore"),
        ):
            text = set_ini(text, section, key, value)
        self.settings_path.write_text(text, "utf-8")

    def setup(self) -> None:
        self.say("== Setup (work dir %s)" % self.work)
        started = time.monotonic()
        package = self.build()
        self.install(package)
        lab = self.lab = Lab()
        lab.up()
        self.say("  lab %s: wan %s | router %s/%s (miniupnpd %s) | nas %s (HTTP admin :8080, HTTPS admin :443)"
                 % (lab.tag, Lab.WAN_HOST, Lab.ROUTER_WAN, Lab.ROUTER_LAN, "IGD:2", Lab.NAS))
        prober = start_prober(lab)
        self.say("  prober (lab mode, --lab-allow 198.51.100.0/24,2001:db8::/32) in wan at %s" % prober.url)
        # The fleet server on SQLite in ns wan, a webhook receiver on the wan host's loopback.
        db = "sqlite:///%s" % (self.work / "fleet.db")
        self.server_cli("init", "--db", db)
        secret = self.server_cli("enroll-secret", "create", "--db", db, "--name", "office").strip().splitlines()[-1]
        token = self.server_cli("api-token", "create", "--db", db, "--name", "advisory").strip().splitlines()[-1]
        from exposure_guard_server.db import make_engine
        from exposure_guard_server.services.admin import Admin

        engine = make_engine(db)
        # The receiver is on loopback, an internal address the server refuses unless told to allow it.
        hooks = Admin(engine, webhook_allow="127.0.0.0/8").webhooks
        _hook_id, hook_secret = hooks.create("lab receiver", "http://127.0.0.1:%d/hook" % HOOK_PORT,
                                             ["became_exposed", "fixed"])
        engine.dispose()
        self.facts.update(api_token=token, hook_secret=hook_secret, db=db)
        (self.work / "webhook.py").write_text(WEBHOOK_RECEIVER)
        lab.spawn("wan", [sys.executable, "-u", str(self.work / "webhook.py"), str(HOOK_PORT),
                          str(self.work / "webhook.jsonl")], "webhook")
        lab.spawn("wan", ["env", "PYTHONPATH=%s" % SRC, sys.executable, "-m", "exposure_guard_server", "serve",
                          "--db", db, "--listen", "%s:%d" % (Lab.WAN_HOST, SERVER_PORT),
                          "--webhook-allow-internal", "127.0.0.0/8"], "server")
        lab.wait_port("wan", HOOK_PORT)
        lab.wait_port("wan", SERVER_PORT, timeout=60)
        self.say("  fleet server (SQLite) in wan at %s; webhook receiver at http://127.0.0.1:%d/hook (wan's loopback)"
                 % (self.server_url, HOOK_PORT))
        # The router: ONE static forward (set by hand in its admin page), plus what ARC's upnpcd made by UPnP.
        lab.add_forward(*STATIC_FORWARD)
        for external, internal, description in ARC:
            # upnpc -a CLIENT INTERNAL_PORT EXTERNAL_PORT PROTO
            lab.upnpc("nas", "-e", description, "-a", Lab.NAS, internal, external, "TCP")
        self.facts["arc_mappings"] = self.upnpc_list()
        self.say("  router: static DNAT wan:%d -> %s:%d (not UPnP); ARC's UPnP mappings (upnpc from nas):"
                 % STATIC_FORWARD)
        for proto, ext, client, port, desc in self.facts["arc_mappings"]:
            self.say("      %s %d -> %s:%d '%s'" % (proto, ext, client, port, desc))
        self.configure(prober.url)
        # Which code runs: the vendored copy from the package, on python3 -S.
        probe = self.lab.run("nas", ["env", "-i", "PYTHONPATH=%s" % (self.qpkg_root / "lib"), self.python, "-S", "-c",
                                     "import exposure_guard, requests, defusedxml, sys; print(exposure_guard.__file__); "
                                     "print(requests.__file__); print(sys.version.split()[0])"], check=True)
        files = probe.stdout.split()
        self.facts["agent_files"] = files[:2]
        self.say("  agent code: %s (requests from %s), Python %s, in ns nas"
                 % (files[0].replace(str(self.work), "<work>"), files[1].replace(str(self.work), "<work>"), files[2]))
        result, seconds = self.agent("enroll", "enroll", "--server", self.server_url, "--secret", secret)
        if result.returncode != 0:
            raise ScenarioError("enroll failed: %s%s" % (result.stdout, result.stderr))
        self.say("  exposure-guard enroll: %s (%.2f s)" % (result.stdout.strip(), seconds))
        self.step_seconds["setup"] = time.monotonic() - started
        self.say("  setup took %.1f s" % self.step_seconds["setup"])

    # -- rendering -------------------------------------------------------------------------------------
    def show_report(self, report: Dict[str, Any], only_failing: bool = True) -> None:
        device = report.get("device", {})
        self.say("    %s  %s (%s, QTS %s)" % (verdict(report), device.get("hostname"), device.get("model"),
                                              device.get("firmware")))
        for item in report.get("findings", []):
            if item["status"] == "fail" or (not only_failing and item["status"] != "skipped"):
                self.say(wrap("%s %-8s %s: %s" % (item["status"].upper(), item["severity"], item["id"],
                                                  item["summary"]), "    "))
        passing = [f["id"] for f in report.get("findings", []) if f["status"] == "pass"]
        self.say(wrap("pass: %s" % ", ".join(passing), "    "))

    def show_reachability(self, report: Dict[str, Any]) -> None:
        for key, v in sorted(port_verdicts(report).items()):
            line = "%s %s: %s" % (v.get("service", "?"), key, v["state"])
            if v.get("matched_by"):
                line += " (matched by %s)" % v["matched_by"]
            if v.get("forwarded"):
                line += ", " + v["forwarded"]
            self.say(wrap("callback " + line, "      "))

    # -- the story -------------------------------------------------------------------------------------
    def step1(self) -> Dict[str, Any]:
        self.say("\n== Step 1: exposure-guard check (the advisory's \"check whether the NAS is exposed\")")
        started = time.monotonic()
        result, seconds = self.agent("step 1 check", "check", "--json")
        report = json.loads(result.stdout)
        self.reports["check"] = report
        self.say("  agent: check --json, exit %d, %.2f s wall" % (result.returncode, seconds))
        self.show_report(report)
        arc = finding(report, "myqnapcloud.upnp-forwarding")
        self.say("      ARC: upnpc.conf [UPnP_Global] Enable = %s" % arc.get("evidence", {}).get("value"))
        for row in finding(report, "router.upnp-mappings").get("evidence", {}).get("mappings_to_this_nas", []):
            self.say("      router UPnP mapping: %s -> %s '%s'%s" % (row["external"], row["internal"], row["description"],
                                                                   " (management port)" if row.get("management_port")
                                                                   else ""))
        self.show_reachability(report)
        self.facts["check_rc"] = result.returncode
        self.step_seconds["step 1"] = time.monotonic() - started
        return report

    def step2(self) -> Dict[str, Any]:
        assert self.lab is not None
        self.say("\n== Step 2: exposure-guard run --once (settings: mode = fix) — fix, re-check, check in")
        started = time.monotonic()
        result, seconds = self.agent("step 2 run --once (fix)", "run", "--once")
        report = self.last_report()
        self.reports["fix"] = report
        self.facts["fix_rc"] = result.returncode
        self.say("  agent: run --once, exit %d, %.2f s wall (checks, fixes, re-checks, checks in)"
                 % (result.returncode, seconds))
        for change in report.get("changes", []):
            self.say(wrap("changed [%s] %s: %r -> %r  (undo id %s)" % (change["check_id"], change["target"],
                                                                      change["before"], change["after"],
                                                                      change["change_id"]), "    "))
        self.say("  after the fix:")
        self.show_report(report)
        self.show_reachability(report)
        self.facts["upnpc_conf_after_fix"] = (self.root / "etc/config/upnpc.conf").read_bytes()
        self.facts["mappings_after_fix"] = self.upnpc_list()
        self.facts["wan_8080_after_fix"] = self.lab.tcp_open("wan", Lab.ROUTER_WAN, 8080)
        self.facts["wan_443_after_fix"] = self.lab.tcp_open("wan", Lab.ROUTER_WAN, 443)
        self.say("  router now: upnpc -l lists %d mapping(s); from wan: :8080 %s, :443 %s; upnpc.conf Enable = %s"
                 % (len(self.facts["mappings_after_fix"]), "open" if self.facts["wan_8080_after_fix"] else "closed",
                    "open" if self.facts["wan_443_after_fix"] else "closed",
                    re.search(rb"Enable\s*=\s*(\S+)", self.facts["upnpc_conf_after_fix"]).group(1).decode()))
        self.step_seconds["step 2"] = time.monotonic() - started
        return report

    def step3(self) -> Dict[str, Any]:
        assert self.lab is not None
        self.say("\n== Step 3: the owner removes the static forward on the router; the agent re-checks")
        started = time.monotonic()
        self.lab.remove_forward(STATIC_FORWARD[0])
        self.say("  router: static forward wan:%d removed (lab.remove_forward)" % STATIC_FORWARD[0])
        result, seconds = self.agent("step 3 run --once (re-check)", "run", "--once")
        report = self.last_report()
        self.reports["recheck"] = report
        self.facts["recheck_rc"] = result.returncode
        self.say("  agent: run --once, exit %d, %.2f s wall" % (result.returncode, seconds))
        self.show_report(report)
        self.show_reachability(report)
        self.step_seconds["step 3"] = time.monotonic() - started
        return report

    def step4(self) -> Dict[str, Any]:
        assert self.lab is not None
        self.say("\n== Step 4: the fleet server — dashboard (headless Chromium) and webhooks")
        started = time.monotonic()
        device_id = self.reports["recheck"]["device"]["device_id"]
        detail = self.api("/api/v1/devices/%s" % device_id)
        summary = self.api("/api/v1/summary")
        transitions = self.api("/api/v1/transitions")
        got = self.wait_for_webhooks(["became_exposed", "fixed"])
        self.facts.update(device_id=device_id, device_detail=detail, fleet_summary=summary, transitions=transitions)
        events = self.webhook_events()
        self.facts["webhooks"] = [(e["headers"].get("X-ExposureGuard-Event"),
                                   verify_signature(self.facts["hook_secret"], e["headers"], e["body"]),
                                   json.loads(e["body"])) for e in events]
        self.say("  API /api/v1/summary: %d device(s), %d report(s) stored, counts %s"
                 % (summary["devices"], summary["reports_stored"], json.dumps(summary["counts"], sort_keys=True)))
        self.say("  API /api/v1/devices/%s: history %s" % (device_id, " -> ".join(
            "%s (%d failing)" % (h["verdict"], h["fail_count"]) for h in reversed(detail.get("history", [])))))
        for kind, good, body in self.facts["webhooks"]:
            self.say("  webhook received: %s for %s (%s -> %s), HMAC signature %s"
                     % (kind, body["device"]["hostname"], body["detail"].get("previous_verdict"),
                        body["detail"].get("verdict"), "valid" if good else "INVALID"))
        if sorted(got) != sorted(set(got)) or not {"became_exposed", "fixed"} <= set(got):
            self.say("  webhook events so far: %s" % got)
        self.artifacts.mkdir(parents=True, exist_ok=True)
        png = self.artifacts / "advisory-dashboard.png"
        script = self.work / "screenshot.py"
        script.write_text(SCREENSHOT)
        shot_started = time.monotonic()
        result = self.lab.run("wan", [sys.executable, str(script), self.server_url, ADMIN_PASSWORD, device_id, str(png),
                                      CHROMIUM, json.dumps(CHROMIUM_ARGS)], check=False, timeout=180)
        if result.returncode != 0:
            raise ScenarioError("dashboard screenshot failed:\n%s%s" % (result.stdout[-2000:], result.stderr[-3000:]))
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        self.facts.update(dashboard=seen, screenshot=png, screenshot_seconds=time.monotonic() - shot_started)
        self.say("  dashboard (Chromium in ns wan, logged in as admin): counts %s" % seen["counts"])
        self.say("  device page: %s" % " ".join(seen["device_name"].split()))
        history = [line.strip() for line in seen["device_page"].splitlines()
                   if re.search(r"became exposed|fixed|EXPOSED|\bOK\b", line)]
        for line in history[:8]:
            self.say("      | %s" % line[:110])
        self.say("  screenshot: %s (%d bytes, %.1f s)" % (png, png.stat().st_size, self.facts["screenshot_seconds"]))
        self.step_seconds["step 4"] = time.monotonic() - started
        return seen

    def step5(self) -> None:
        assert self.lab is not None
        self.say("\n== Step 5: exposure-guard undo --all — back to how the owner had it")
        started = time.monotonic()
        result, seconds = self.agent("step 5 undo --all", "undo", "--all")
        self.facts["undo_rc"] = result.returncode
        self.facts["undo_output"] = result.stdout
        self.say("  agent: undo --all, exit %d, %.2f s wall" % (result.returncode, seconds))
        for line in result.stdout.strip().splitlines():
            self.say(wrap(line, "    "))
        after = (self.root / "etc/config/upnpc.conf").read_bytes()
        self.facts["upnpc_conf_after_undo"] = after
        self.facts["mappings_after_undo"] = self.upnpc_list()
        self.facts["wan_8080_after_undo"] = self.lab.tcp_open("wan", Lab.ROUTER_WAN, 8080)
        same = after == self.facts["upnpc_conf_before"]
        self.say("  upnpc.conf byte-identical to the original: %s (sha256 %s)"
                 % ("yes" if same else "NO", hashlib.sha256(after).hexdigest()[:16]))
        self.say("  upnpc -l lists again:")
        for proto, ext, client, port, desc in self.facts["mappings_after_undo"]:
            self.say("      %s %d -> %s:%d '%s'" % (proto, ext, client, port, desc))
        self.say("  from wan, :8080 is %s again" % ("open" if self.facts["wan_8080_after_undo"] else "still closed"))
        self.step_seconds["step 5"] = time.monotonic() - started

    def summary(self) -> None:
        self.say("\n== Timings")
        for label, seconds in self.timings:
            self.say("  agent %-30s %6.2f s" % (label, seconds))
        for label, seconds in self.step_seconds.items():
            self.say("  %-36s %6.2f s" % (label, seconds))
        self.say("  whole scenario (build, install, lab, 5 steps)  %.1f s" % self.elapsed())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.advisory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--update-docs", action="store_true",
                        help="copy the screenshot to docs/img/advisory-dashboard.png")
    parser.add_argument("--python", default="/usr/bin/python3", help="the NAS's python3 (default /usr/bin/python3)")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print("cannot run the advisory scenario: " + reason, file=sys.stderr)
        return 77
    Lab.reap_stale()
    scenario = Advisory(out=lambda line: print(line, flush=True), python=args.python)
    print("ExposureGuard: the January 2022 QNAP advisory, end to end, in the lab")
    try:
        with scenario:
            scenario.setup()
            scenario.step1()
            scenario.step2()
            scenario.step3()
            scenario.step4()
            scenario.step5()
        scenario.summary()
        if args.update_docs:
            target = REPO / "docs" / "img" / "advisory-dashboard.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(str(scenario.facts["screenshot"]), str(target))
            print("copied the screenshot to %s" % target)
    finally:
        if args.keep:
            print("work directory kept: %s" % scenario.work)
        else:
            shutil.rmtree(str(scenario.work), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
