"""The deployment of docs/deploy.md, for real, in network namespaces this test creates (tests.support.netlab):
the shipped nginx site with TLS (a CA and certificate made here) in front of the fleet server (SQLite) and
the callback prober, both started with the command lines of the shipped systemd units, in ``wan``; the agent
and other clients in ``nas``, behind the lab router's NAT, so the edge sees them as 198.51.100.1.

    nas 10.77.0.10 --NAT--> router 198.51.100.1 ---> wan: nginx :80/:443 on 198.51.100.10 (eg.example.com)
    nas 2001:db8:77::10 --routed-->                       and 198.51.100.11, 2001:db8:100::11 (probe.example.com);
                                                          server 127.0.0.1:8443, prober 127.0.0.1:8480

What it proves: the agent enrolls and checks in over https with its CA file; the server records the
caller's address from the proxy's header, whatever X-Forwarded-For the client sent, and sees the scheme as
https (Secure ``__Host-`` session cookie); the prober probes the caller found the same way and nothing
else, over IPv4 and IPv6; the backends cannot be reached but through nginx; plain HTTP only redirects; the body cap is
nginx's. Traffic stays on loopback and inside the lab's namespaces."""

from __future__ import annotations

import grp
import json
import re
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.deploy.shipped import (
    PROBER_ENV,
    PROBER_NAME,
    PROBER_UNIT,
    SERVER_ENV,
    SERVER_NAME,
    SERVER_UNIT,
    exec_argv,
    make_ca_and_cert,
    nginx_binary,
    nginx_prefix,
    python_argv,
    unit_environment,
)
from tests.support.netlab import Lab, LabError
from tests.support.paths import QTS_TREES, SRC
from tests.support.serverproc import ADMIN_PASSWORD, cli
from tests.support.wait import wait_for

pytestmark = pytest.mark.lab

EG_ADDR = Lab.WAN_HOST  # 198.51.100.10: nginx, the fleet server's name
PROBE_ADDR, PROBE_ADDR6 = "198.51.100.11", "2001:db8:100::11"  # nginx again, the prober's name
CALLER = Lab.ROUTER_WAN  # what every IPv4 request from ns nas looks like from wan (the router masquerades)
CALLER6 = Lab.NAS6  # IPv6 is routed without NAT: the NAS's own global address
FORGED = "203.0.113.66"  # what a client claims in X-Forwarded-For; outside --lab-allow, never probed
EG_URL, PROBE_URL = "https://%s" % EG_ADDR, "https://%s" % PROBE_ADDR
NO_PROXY = {"http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "ALL_PROXY": "", "all_proxy": ""}


@dataclass
class Edge:
    lab: Lab
    work: Path
    ca: Path
    db: Path
    secret: str
    api_token: str
    prober_token: str
    prober_log: Path
    prefix: Path  # nginx's

    def curl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """curl from ns nas, trusting only the test CA."""
        return self.lab.run("nas", ["curl", "-sS", "--noproxy", "*", "--cacert", str(self.ca), "-m", "30", *args],
                            check=check, timeout=60)

    def api(self, path: str) -> Any:
        """The server's read API through nginx, from ns nas, with the API token."""
        out = self.curl("-f", "-H", "Authorization: Bearer %s" % self.api_token, EG_URL + path).stdout
        return json.loads(out)

    def python(self, code_or_module: str, *args: str) -> subprocess.CompletedProcess:
        return self.lab.python("nas", code_or_module, *args, timeout=180, env=NO_PROXY)

    def prober_records(self, event: str) -> List[Dict[str, Any]]:
        lines = self.prober_log.read_text("utf-8").splitlines() if self.prober_log.exists() else []
        return [r for r in map(json.loads, lines) if r.get("event") == event]

    def logs(self) -> str:
        said = ["--- %s\n%s" % (name, self.lab.log(name)[-3000:]) for name in ("nginx", "server", "prober")]
        error_log = self.prefix / "logs" / "error.log"
        if error_log.exists():
            said.append("--- nginx error.log\n%s" % error_log.read_text("utf-8", "replace")[-3000:])
        return "\n".join(said)


def spawn_unit(lab: Lab, name: str, env: Dict[str, str], argv: List[str]) -> None:
    """A unit's command in ns wan with the unit's environment (and the checkout on PYTHONPATH)."""
    lab.spawn("wan", ["env", "PYTHONPATH=%s" % SRC] + ["%s=%s" % item for item in sorted(env.items())] + argv, name)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    reason = Lab.missing(igd=False)
    if reason:
        pytest.skip("lab: " + reason)
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    Lab.reap_stale()
    work = tmp_path_factory.mktemp("deploy-lab")
    lab = Lab(igd=False, stun=False, nas_http=None, nas_https=None, ipv6=True)
    # nginx's workers run as nobody, as on a real host: their prefix must be theirs to enter. Named after the
    # lab, so Lab.reap_stale() removes it too if this process is killed.
    prefix = Path(tempfile.mkdtemp(prefix="%s-nginx-" % lab.tag))
    try:
        lab.up()
        lab.run("wan", ["ip", "addr", "add", "%s/24" % PROBE_ADDR, "dev", "w0"])
        lab.run("wan", ["ip", "-6", "addr", "add", "%s/64" % PROBE_ADDR6, "dev", "w0", "nodad"])
        tls = make_ca_and_cert(work / "tls", [SERVER_NAME, PROBER_NAME], [EG_ADDR, PROBE_ADDR, PROBE_ADDR6])
        prefix.chmod(0o755)
        group = "nogroup" if _group_exists("nogroup") else "nobody"
        names = {SERVER_NAME: EG_ADDR, PROBER_NAME: "%s [%s]" % (PROBE_ADDR, PROBE_ADDR6)}  # the Host clients send
        conf = nginx_prefix(prefix, tls["cert"], tls["key"], names=names, user="nobody %s" % group)
        checked = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True,
                                 timeout=120)
        assert checked.returncode == 0, checked.stderr
        lab.spawn("wan", [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"], "nginx")

        # The server as docs/deploy.md sets it up: init (SQLite in the data folder), then the unit's command.
        data = work / "server-data"
        server_env = unit_environment(SERVER_UNIT, SERVER_ENV, overrides={"EXPOSURE_GUARD_SERVER_DATA": str(data)})
        cli_env = {"EXPOSURE_GUARD_SERVER_DATA": str(data), "PYTHONPATH": str(SRC)}
        cli("init", env=cli_env)
        secret = cli("enroll-secret", "create", "--name", "lab", env=cli_env).stdout.strip().splitlines()[-1]
        api_token = cli("api-token", "create", "--name", "lab", env=cli_env).stdout.strip().splitlines()[-1]
        spawn_unit(lab, "server", server_env, python_argv(exec_argv(SERVER_UNIT, server_env)))

        # The prober with the unit's command; lab mode for the caller's (documentation-range) address only.
        prober_token = secrets.token_urlsafe(24)
        prober_env = unit_environment(PROBER_UNIT, PROBER_ENV, overrides={
            "EXPOSURE_GUARD_PROBER_TOKENS": prober_token,
            "EG_PROBER_ARGS": "--lab-allow %s/32,%s/128 --log-connects --connect-timeout 2" % (CALLER, CALLER6)})
        (work / "log" / "exposure-guard-prober").mkdir(parents=True)
        spawn_unit(lab, "prober", prober_env, python_argv(exec_argv(PROBER_UNIT, prober_env, logs=str(work / "log"))))

        edge = Edge(lab, work, tls["ca"], data / "exposure-guard.db", secret, api_token, prober_token,
                    work / "log" / "exposure-guard-prober" / "access.jsonl", prefix)
        try:
            for port in (80, 443, 8443, 8480):
                lab.wait_port("wan", port)
            for url in (EG_URL + "/healthz", PROBE_URL + "/healthz"):
                wait_for("%s through nginx" % url,
                         lambda url=url: edge.curl("-f", "-o", "/dev/null", url, check=False).returncode == 0)
        except (AssertionError, LabError) as exc:
            raise AssertionError("%s\n%s" % (exc, edge.logs())) from None
        yield edge
    finally:
        lab.down()
        shutil.rmtree(str(prefix), ignore_errors=True)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def test_the_agent_enrolls_and_checks_in_over_tls_and_the_server_records_where_from(edge: Edge) -> None:
    root = edge.work / "nas-root"
    shutil.copytree(str(QTS_TREES / "hardened"), str(root), symlinks=True)
    state, settings = edge.work / "nas-state", edge.work / "exposure-guard.ini"
    settings.write_text("[server]\nurl = %s\nca_file = %s\n" % (EG_URL, edge.ca))
    common = ["--root", str(root), "--state-dir", str(state), "--settings", str(settings)]

    enrolled = edge.python("exposure_guard", "enroll", "--server", EG_URL, "--secret", edge.secret, *common)
    assert enrolled.returncode == 0 and "enrolled" in enrolled.stdout, enrolled.stdout + enrolled.stderr + edge.logs()
    device_id = json.loads((state / "enrollment.json").read_text())["device_id"]
    ran = edge.python("exposure_guard", "run", "--once", "--offline", *common)
    assert ran.returncode == 0, ran.stdout + ran.stderr + edge.logs()
    assert ran.stdout.strip().endswith("check-in: 1 delivered, 0 already on the server, 0 rejected, "
                                       "0 waiting in the spool"), ran.stdout + ran.stderr + edge.logs()
    device = edge.api("/api/v1/devices/%s" % device_id)
    assert device["reports"] == 1, device

    # Enrolling again proves itself with the node key; the server notes the address the request came from:
    # the one nginx saw (the lab router's public address), not the NAS's LAN address or nginx's loopback.
    again = edge.python("exposure_guard", "enroll", "--server", EG_URL, "--secret", edge.secret, *common)
    assert again.returncode == 0 and "enrolled again" in again.stdout, again.stdout + again.stderr
    events = edge.api("/api/v1/transitions?kind=re_enrolled&device=%s" % device_id)
    (event,) = events["transitions"]
    assert event["detail"]["proof"] == "node_key" and event["detail"]["client"] == CALLER, event

    # Without its CA file the agent refuses the server's certificate and says where to set it.
    settings.write_text("[server]\nurl = %s\n" % EG_URL)
    refused = edge.python("exposure_guard", "enroll", "--server", EG_URL, "--secret", edge.secret, *common)
    assert refused.returncode != 0 and "ca_file" in refused.stderr, refused.stdout + refused.stderr


LOGIN = r'''
import json, re, sys
import requests
base, ca, user, password, forged = sys.argv[1:6]
session = requests.Session()
session.trust_env = False
form = session.get(base + "/login", verify=ca, timeout=60)
csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
answer = session.post(base + "/login", data={"username": user, "password": password, "csrf": csrf, "next": "/"},
                      headers={"X-Forwarded-For": forged, "X-Forwarded-Proto": "http"}, verify=ca, timeout=60,
                      allow_redirects=False)
print(json.dumps({"form": form.status_code, "form_cookie": form.headers.get("set-cookie", ""),
                  "status": answer.status_code, "cookie": answer.headers.get("set-cookie", ""),
                  "hsts": answer.headers.get("strict-transport-security", "")}))
'''


def login(edge: Edge, password: str) -> Dict[str, Any]:
    result = edge.python(LOGIN, EG_URL, str(edge.ca), "admin", password, FORGED)
    assert result.returncode == 0, result.stdout + result.stderr + edge.logs()
    return json.loads(result.stdout.strip().splitlines()[-1])


def login_attempts(edge: Edge) -> Dict[str, int]:
    with sqlite3.connect(str(edge.db)) as conn:
        return dict(conn.execute("SELECT client, attempts FROM login_attempts").fetchall())


def test_the_server_takes_the_client_and_scheme_from_nginx_not_from_the_client(edge: Edge) -> None:
    """A login with a wrong password is counted against the address nginx saw, although the client claimed
    another in X-Forwarded-For; the right one gets the Secure ``__Host-`` cookie although it claimed http."""
    wrong = login(edge, "not the password")
    assert wrong["form"] == 200 and wrong["status"] == 401, wrong
    assert "secure" in wrong["form_cookie"].lower(), wrong
    assert login_attempts(edge) == {CALLER: 1}
    right = login(edge, ADMIN_PASSWORD)
    assert right["status"] == 303, right
    assert right["cookie"].startswith("__Host-eg_session=") and "secure" in right["cookie"].lower(), right
    assert right["hsts"].startswith("max-age="), right
    assert login_attempts(edge) == {}  # a successful login clears its address's count: the same address


PROBE = r'''
import json, sys
import requests
url, ca, token, forged, nonce = sys.argv[1:6]
headers = {"X-Forwarded-For": forged}
if token:
    headers["Authorization"] = "Bearer " + token
answer = requests.post(url + "/v1/probe", json={"nonce": nonce, "ports": [{"port": 9}]}, headers=headers, verify=ca,
                       timeout=120)
print(json.dumps({"status": answer.status_code, "body": answer.json()}))
'''


def probe(edge: Edge, token: str, url: str = PROBE_URL) -> Dict[str, Any]:
    nonce = secrets.token_hex(8)
    result = edge.python(PROBE, url, str(edge.ca), token, FORGED, nonce)
    assert result.returncode == 0, result.stdout + result.stderr + edge.logs()
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer["nonce"] = nonce
    return answer


def test_the_prober_sees_the_caller_only_through_the_proxy(edge: Edge) -> None:
    unauthorised = probe(edge, "")
    assert unauthorised["status"] == 401, unauthorised  # the token from the EnvironmentFile is required
    answer = probe(edge, edge.prober_token)
    assert answer["status"] == 200, answer
    body = answer["body"]
    assert body["observed_address"] == CALLER and body["via_proxy"] is True and body["nonce"] == answer["nonce"], body
    assert [(p["port"], p["state"]) for p in body["ports"]] == [(9, "closed")], body
    requests = wait_for("the probe in the prober's log", lambda: [
        r for r in edge.prober_records("request") if r.get("nonce") == answer["nonce"]])
    assert requests[0]["peer"] == "127.0.0.1" and requests[0]["client"] == CALLER, requests
    assert requests[0]["via_proxy"] is True and requests[0]["xff_ignored"] is False, requests
    # Over IPv6 (nginx's [::]:443, no NAT): the NAS's own address, taken from nginx's header the same way.
    answer6 = probe(edge, edge.prober_token, "https://[%s]" % PROBE_ADDR6)
    assert answer6["status"] == 200, answer6
    assert answer6["body"]["observed_address"] == CALLER6 and answer6["body"]["family"] == "ipv6", answer6
    assert answer6["body"]["via_proxy"] is True and answer6["body"]["ports"][0]["state"] == "closed", answer6
    targets = {r["target"] for r in edge.prober_records("connect")}
    assert targets == {CALLER, CALLER6}, targets  # never the forged address, never anything else


def test_only_nginx_faces_the_network(edge: Edge) -> None:
    lab = edge.lab
    # The backends listen on wan's loopback only: from outside, only nginx's ports answer.
    for port in (8443, 8480):
        assert not lab.tcp_open("nas", EG_ADDR, port), port
    assert lab.tcp_open("nas", EG_ADDR, 443) and lab.tcp_open("nas", EG_ADDR, 80)
    # Plain HTTP redirects to HTTPS and proxies nothing.
    for url in ("http://%s/api/v1/summary?x=1" % EG_ADDR, "http://%s/v1/probe" % PROBE_ADDR):
        out = edge.curl("-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", url).stdout
        assert out == "301 " + url.replace("http://", "https://"), out
    # The prober's /metrics trusts loopback peers, and through nginx every peer is loopback: nginx says 404.
    assert edge.curl("-o", "/dev/null", "-w", "%{http_code}", PROBE_URL + "/metrics").stdout == "404"
    assert edge.curl("-o", "/dev/null", "-w", "%{http_code}", EG_URL + "/metrics").stdout == "404"
    # A check-in larger than the server's --max-body is refused by nginx before it reaches the server.
    big = edge.work / "big.gz"
    big.write_bytes(b"\0" * (1024 * 1024 + 1))
    out = edge.curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Encoding: gzip", "-H",
                    "Authorization: Bearer egn_nobody", "--data-binary", "@%s" % big, EG_URL + "/api/v1/checkin").stdout
    assert out == "413", out
    # TLS 1.2 at least, with the test CA's certificate for the name asked.
    assert re.search(r"TLSv1\.[23]", edge.curl("-v", "-o", "/dev/null", EG_URL + "/healthz").stderr)
