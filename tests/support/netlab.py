"""A network-namespace lab with a real UPnP IGD router (Debian's miniupnpd), for lab tests and benches.

Topology (nothing is added to the host namespace: veths are created inside the namespaces)::

    wan  w0 198.51.100.10/24        (an internet host; no route to the LAN, only to the router's address)
      |
    router  r-wan 198.51.100.1/24 | br-lan 10.77.0.1/24   NAT (masquerade of 10.77.0.0/24), forwarding,
      |                           miniupnpd in the foreground (secure_mode on), nft table ``inet lab``
    nas  n0 10.77.0.10/24          HTTP server on 8080 and HTTPS (self-signed, openssl) on 443
    (+ any extra LAN hosts from add_lan_host(), e.g. 10.77.0.20, on the same LAN bridge)

With ``ipv6=True`` the documentation prefix 2001:db8::/32 is added: wan 2001:db8:100::10, router
2001:db8:100::1 | 2001:db8:77::1, nas 2001:db8:77::10 (global scope, routed without NAT, reachable from wan
unless ``ipv6_open=False``; miniupnpd then also serves WANIPv6FirewallControl).

Debian 12's miniupnpd refuses to forward when its WAN address is reserved (198.51.100.0/24 is): the lab
runs a tiny STUN responder in ``wan`` and points miniupnpd at it (``ext_perform_stun``), so it declares
198.51.100.1 public. ``upnpc`` needs ``-i`` for the same reason (use :meth:`Lab.upnpc`).

Namespace names are unique per run (``eg<pid><random>-wan`` …); :meth:`Lab.down` always removes them,
kills every process the lab started and any stray process still inside its namespaces, and deletes the
work directory. A Lab is a context manager; the ``lab`` / ``make_lab`` pytest fixtures (tests/lab/conftest.py)
build one per test and tear it down even on failure. Root is required (``Lab.missing()`` says why not).

API (``role`` is "wan", "router", "nas" or a name given to add_lan_host)::

    lab = Lab(igd=True, igd_v1=False, ipv6=False, ipv6_open=True, stun=True, secure_mode=True,
              nas_http=8080, nas_https=443, cert_cn="NAS").up()      # or: with Lab(...) as lab:
    lab.ns["nas"]                      -> the namespace name
    lab.run("nas", ["ip", "-br", "addr"], check=True, timeout=30)  -> CompletedProcess (text)
    lab.python("nas", "exposure_guard", "check", "--json")        -> python3 -m exposure_guard ... in nas
    lab.python("nas", "import sys; print(sys.argv)", "x")         -> python3 -c CODE x   (PYTHONPATH=src)
    lab.spawn("router", [...], name="web")                       -> Popen, killed at down()
    lab.start_http("router", 80, body="router page", tls=False, bind="0.0.0.0")  -> serves body at any path
    lab.add_lan_host("cam", "10.77.0.20")                        -> a second LAN host on the router's bridge
    lab.add_forward(8443, "10.77.0.10", 443, proto="tcp")        -> static DNAT on the router (not UPnP)
    lab.remove_forward(8443, proto="tcp")
    lab.http_get("wan", "http://198.51.100.1:8080/", timeout=3)  -> body str, or None if it fails
    lab.tcp_open("wan", "198.51.100.1", 8080, timeout=2)         -> True when a TCP connection succeeds
    lab.upnpc("nas", "-l")                                        -> upnpc -i -u <rootDesc> -l in that role
    lab.igd_location                   -> http://10.77.0.1:5000/rootDesc.xml
    lab.miniupnpd_log()                -> the daemon's log so far
    lab.restart_miniupnpd()            -> e.g. after changing lab.miniupnpd_extra
    lab.down()
    Lab.reap_stale()                   -> removes namespaces left by labs whose process was killed

Addresses are class attributes (Lab.WAN_HOST, ROUTER_WAN, ROUTER_LAN, NAS, and the *6 variants).
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tests.support.net import make_cert
from tests.support.paths import SRC
from tests.support.wait import wait_for

MINIUPNPD = "/usr/sbin/miniupnpd"

_LIVE_LABS: List[Lab] = []

STUN_SCRIPT = r'''
import socket, struct, sys
addr = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(addr)
print("stun listening on %s:%d" % addr, flush=True)
while True:
    data, peer = s.recvfrom(2048)
    if len(data) < 20 or data[0:2] != b"\x00\x01":
        continue
    cookie, tid = data[4:8], data[8:20]
    ip = socket.inet_aton(peer[0]); port = peer[1]
    xip = bytes(a ^ b for a, b in zip(ip, cookie))
    attr = struct.pack("!HHBBH", 0x0020, 8, 0, 1, port ^ 0x2112) + xip
    s.sendto(struct.pack("!HH", 0x0101, len(attr)) + cookie + tid + attr, peer)
'''

SERVER_SCRIPT = r'''
import http.server, socket, ssl, sys
port, bind, body, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode(), sys.argv[4], sys.argv[5]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_HEAD = do_GET
    def log_message(self, *a):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    daemon_threads = True
    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
server = Server((bind, port), Handler)
if cert:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("serving", port, flush=True)
server.serve_forever()
'''


class LabError(RuntimeError):
    pass


class Lab:
    WAN_HOST, ROUTER_WAN, ROUTER_LAN, NAS = "198.51.100.10", "198.51.100.1", "10.77.0.1", "10.77.0.10"
    LAN_NET = "10.77.0.0/24"
    WAN_HOST6, ROUTER_WAN6, ROUTER_LAN6, NAS6 = "2001:db8:100::10", "2001:db8:100::1", "2001:db8:77::1", "2001:db8:77::10"
    LAN_NET6 = "2001:db8:77::/64"
    HTTP_PORT = 5000  # miniupnpd's description/control port

    def __init__(self, *, igd: bool = True, igd_v1: bool = False, ipv6: bool = False, ipv6_open: bool = True,
                 stun: bool = True, secure_mode: bool = True, nas_http: Optional[int] = 8080,
                 nas_https: Optional[int] = 443, cert_cn: str = "NAS", miniupnpd_extra: Sequence[str] = (),
                 double_nat: bool = False) -> None:
        self.igd, self.igd_v1, self.ipv6, self.ipv6_open, self.stun = igd, igd_v1, ipv6, ipv6_open, stun
        # double_nat: another NAT router ("outer") between wan and the router; the router's WAN address is then
        # private (192.168.100.2) and the internet sees the outer one's (ROUTER_WAN).
        self.double_nat = double_nat
        self.secure_mode, self.nas_http, self.nas_https, self.cert_cn = secure_mode, nas_http, nas_https, cert_cn
        self.miniupnpd_extra = list(miniupnpd_extra)
        tag = "eg%d%s" % (os.getpid(), "".join(random.choice(string.ascii_lowercase) for _ in range(4)))
        self.tag = tag
        self.ns: Dict[str, str] = {role: "%s-%s" % (tag, role) for role in ("wan", "router", "nas")}
        self.dir = Path(tempfile.mkdtemp(prefix="%s-" % tag))
        self.procs: Dict[str, subprocess.Popen] = {}
        self.forwards: List[Tuple[int, str, int, str]] = []
        self.lan_hosts: Dict[str, str] = {}
        self._created: List[str] = []
        self._up = False
        self._miniupnpd_runs = 0

    # ------------------------------------------------------------------ prerequisites
    @staticmethod
    def missing(igd: bool = True) -> Optional[str]:
        """Why this machine cannot run the lab (None when it can)."""
        if os.geteuid() != 0:
            return "needs root (network namespaces, nftables)"
        for tool in ("ip", "nft", "ss", "curl", "openssl") + ((MINIUPNPD,) if igd else ()):
            if shutil.which(tool) is None:
                return "%s is not installed (apt-get install iproute2 nftables curl openssl miniupnpd)" % tool
        return None

    @staticmethod
    def reap_stale() -> List[str]:
        """Remove namespaces (and their processes and work dirs) left by labs whose process died without
        tearing down (SIGKILL, power loss). Only names made by this harness (``eg<pid><4 letters>-``) whose
        <pid> is gone are touched. Returns the namespaces removed."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        removed = []
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            match = re.match(r"^eg(\d+)([a-z]{4})-\w+$", name)
            if not match or int(match.group(1)) == os.getpid() or Path("/proc/%s" % match.group(1)).exists():
                continue
            Lab._kill_strays_in(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
            removed.append(name)
            for leftover in Path(tempfile.gettempdir()).glob("eg%s%s-*" % match.groups()):
                shutil.rmtree(str(leftover), ignore_errors=True)
        return removed

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        reason = self.missing(self.igd)
        if reason:
            raise LabError("cannot build the lab: " + reason)
        _LIVE_LABS.append(self)
        try:
            self._topology()
            self._firewall()
            if self.stun:
                self._write("stun.py", STUN_SCRIPT)
                self.spawn("wan", [sys.executable, "-u", str(self.dir / "stun.py"), self.WAN_HOST, "3478"], "stun")
                self.wait_port("wan", 3478, "udp")
            if self.nas_http:
                self.start_http("nas", self.nas_http, body="hello from nas")
            if self.nas_https:
                self.start_http("nas", self.nas_https, body="hello from nas https", tls=True)
            if self.igd:
                self.start_miniupnpd()
        except BaseException:
            self.down()
            raise
        self._up = True
        return self

    def down(self) -> None:
        for name in list(self.procs):
            self._stop(name)
        for ns in list(self._created) + list(self.ns.values()):
            self._kill_strays(ns)
        for ns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._created = []
        shutil.rmtree(str(self.dir), ignore_errors=True)
        if self in _LIVE_LABS:
            _LIVE_LABS.remove(self)
        self._up = False

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait(30)  # SIGKILL cannot be ignored: this only waits for a loaded machine to reap it

    def _kill_strays(self, ns: str) -> None:
        self._kill_strays_in(ns)

    @staticmethod
    def _kill_strays_in(ns: str) -> None:
        """Kill whatever still runs inside one of OUR namespaces (by pid, from `ip netns pids`)."""
        found = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        for pid in found.stdout.split():
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass

    # ------------------------------------------------------------------ running things
    def _argv(self, role: str, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.ns[role]] + [str(a) for a in argv]

    def run(self, role: str, argv: Sequence[str], check: bool = True, timeout: float = 30,
            input: Optional[str] = None, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        result = subprocess.run(self._argv(role, argv), capture_output=True, text=True, timeout=timeout,
                                input=input, env=full_env)
        if check and result.returncode != 0:
            raise LabError("in %s: %s -> rc %d\n%s%s" % (role, " ".join(map(str, argv)), result.returncode,
                                                          result.stdout[-2000:], result.stderr[-2000:]))
        return result

    def python(self, role: str, code_or_module: str, *args: str, check: bool = False, timeout: float = 60,
               env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """``python3 -m MODULE args`` when ``code_or_module`` is a dotted name, else ``python3 -c CODE args``;
        the repository's src/ is on PYTHONPATH."""
        module = re.match(r"^[A-Za-z_][\w.]*$", code_or_module)
        head = ["-m" if module else "-c", code_or_module]
        paths = [str(SRC)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        full_env = dict(env or {}, PYTHONPATH=os.pathsep.join(paths))
        return self.run(role, [sys.executable] + head + list(args), check=check, timeout=timeout, env=full_env)

    def spawn(self, role: str, argv: Sequence[str], name: str) -> subprocess.Popen:
        if name in self.procs:
            self._stop(name)
        with open(str(self.dir / ("%s.log" % name)), "ab") as log:
            proc = subprocess.Popen(self._argv(role, argv), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.dir / ("%s.log" % name)).read_text("utf-8", "replace")
        except OSError:
            return ""

    def wait_port(self, role: str, port: int, proto: str = "tcp", timeout: float = 60) -> None:
        flag = "-Hlnt" if proto == "tcp" else "-Hlnu"
        wait_for("a listener on %s/%d in %s" % (proto, port, role),
                 lambda: self.run(role, ["ss", flag, "sport = :%d" % port], check=False).stdout.strip(),
                 timeout=timeout, error=LabError)

    # ------------------------------------------------------------------ topology
    def _add_ns(self, role: str) -> None:
        name = self.ns.setdefault(role, "%s-%s" % (self.tag, role))
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self._created.append(name)
        self.run(role, ["ip", "link", "set", "lo", "up"])

    def _topology(self) -> None:
        for role in ("wan", "router", "nas"):
            self._add_ns(role)
        sh = self._ip
        if self.double_nat:
            self._outer_nat()
        else:
            sh("router", "link add r-wan type veth peer name w0 netns %s" % self.ns["wan"])
        sh("router", "link add br-lan type bridge")
        sh("router", "link set br-lan type bridge mcast_snooping 0")
        sh("router", "link add r-nas type veth peer name n0 netns %s" % self.ns["nas"])
        sh("router", "link set r-nas master br-lan")
        sh("wan", "addr add %s/24 dev w0" % self.WAN_HOST)
        sh("router", "addr add %s/24 dev r-wan" % (self.OUTER_LAN_ROUTER if self.double_nat else self.ROUTER_WAN))
        sh("router", "addr add %s/24 dev br-lan" % self.ROUTER_LAN)
        sh("nas", "addr add %s/24 dev n0" % self.NAS)
        for role, dev in (("wan", "w0"), ("router", "r-wan"), ("router", "br-lan"), ("router", "r-nas"), ("nas", "n0")):
            sh(role, "link set %s multicast on up" % dev)
        sh("nas", "route add default via %s" % self.ROUTER_LAN)
        self.run("router", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        if self.double_nat:
            sh("router", "route add default via %s" % self.OUTER_LAN)
        if self.ipv6:
            for role, cmd in (("wan", "-6 addr add %s/64 dev w0 nodad" % self.WAN_HOST6),
                              ("router", "-6 addr add %s/64 dev r-wan nodad" % self.ROUTER_WAN6),
                              ("router", "-6 addr add %s/64 dev br-lan nodad" % self.ROUTER_LAN6),
                              ("nas", "-6 addr add %s/64 dev n0 nodad" % self.NAS6),
                              ("nas", "-6 route add default via %s" % self.ROUTER_LAN6),
                              ("wan", "-6 route add %s via %s" % (self.LAN_NET6, self.ROUTER_WAN6))):
                sh(role, cmd)
            self.run("router", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])

    OUTER_LAN, OUTER_LAN_ROUTER = "192.168.100.1", "192.168.100.2"

    def _outer_nat(self) -> None:
        """ns outer: WAN side ROUTER_WAN (what the internet sees), LAN side 192.168.100.1 towards the router's
        r-wan; it masquerades everything going out and forwards nothing in (no port forwards)."""
        self._add_ns("outer")
        sh = self._ip
        sh("outer", "link add o-wan type veth peer name w0 netns %s" % self.ns["wan"])
        sh("router", "link add r-wan type veth peer name o-lan netns %s" % self.ns["outer"])
        sh("outer", "addr add %s/24 dev o-wan" % self.ROUTER_WAN)
        sh("outer", "addr add %s/24 dev o-lan" % self.OUTER_LAN)
        for dev in ("o-wan", "o-lan"):
            sh("outer", "link set %s up" % dev)
        self.run("outer", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        self.run("outer", ["nft", "-f", "-"], input="""
table inet outer {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "o-lan" oifname "o-wan" accept
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    oifname "o-wan" masquerade
  }
}
""")

    def _ip(self, role: str, args: str) -> None:
        self.run(role, ["ip"] + args.split())

    def add_lan_host(self, role: str, address: str, address6: Optional[str] = None) -> str:
        """Another LAN host (namespace ``role``, interface h0) on the router's LAN bridge."""
        if role in self.ns:
            raise LabError("role %s exists" % role)
        self._add_ns(role)
        port = "r-%s" % role[:10]
        self._ip("router", "link add %s type veth peer name h0 netns %s" % (port, self.ns[role]))
        self._ip("router", "link set %s master br-lan" % port)
        self._ip("router", "link set %s up" % port)
        self._ip(role, "addr add %s/24 dev h0" % address)
        self._ip(role, "link set h0 multicast on up")
        self._ip(role, "route add default via %s" % self.ROUTER_LAN)
        if address6 and self.ipv6:
            self._ip(role, "-6 addr add %s/64 dev h0 nodad" % address6)
            self._ip(role, "-6 route add default via %s" % self.ROUTER_LAN6)
        self.lan_hosts[role] = address
        return self.ns[role]

    def _firewall(self) -> None:
        v6 = ""
        if self.ipv6 and self.ipv6_open:
            v6 = 'iifname "r-wan" ip6 daddr %s accept' % self.LAN_NET6
        self.run("router", ["nft", "-f", "-"], input="""
table inet lab {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "br-lan" oifname "r-wan" accept
    iifname "br-lan" oifname "br-lan" accept
    meta l4proto ipv6-icmp accept
    %s
    jump static_forward
    jump miniupnpd
  }
  chain static_forward { }
  chain miniupnpd { }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump static_prerouting
    jump prerouting_miniupnpd
  }
  chain static_prerouting { }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "r-wan" ip saddr %s masquerade
  }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
""" % (v6, self.LAN_NET))

    # ------------------------------------------------------------------ servers
    def _cert(self) -> Tuple[str, str]:
        cert, key = self.dir / "cert.crt", self.dir / "cert.key"
        if not cert.exists():
            return make_cert(self.dir, "cert", "/CN=%s" % self.cert_cn)
        return str(cert), str(key)

    def start_http(self, role: str, port: int, body: str = "hello", tls: bool = False,
                   bind: Optional[str] = None) -> subprocess.Popen:
        """A tiny web server answering ``body`` on every GET; https with the lab's self-signed cert."""
        script = self.dir / "server.py"
        if not script.exists():
            self._write("server.py", SERVER_SCRIPT)
        cert, key = self._cert() if tls else ("", "")
        bind = bind or ("::" if self.ipv6 else "0.0.0.0")
        proc = self.spawn(role, [sys.executable, "-u", str(script), str(port), bind, body, cert, key],
                          "http-%s-%d" % (role, port))
        self.wait_port(role, port)
        return proc

    # ------------------------------------------------------------------ miniupnpd
    @property
    def igd_location(self) -> str:
        return "http://%s:%d/rootDesc.xml" % (self.ROUTER_LAN, self.HTTP_PORT)

    def miniupnpd_conf(self) -> str:
        lines = [
            "ext_ifname=r-wan", "listening_ip=br-lan", "http_port=%d" % self.HTTP_PORT, "enable_natpmp=no",
            "enable_upnp=yes", "secure_mode=%s" % ("yes" if self.secure_mode else "no"), "system_uptime=yes",
            "notify_interval=60", "clean_ruleset_interval=600", "uuid=3c1e6d3a-7f2b-4a55-9d0e-0a1b2c3d4e5f",
            "friendly_name=lab-igd", "lease_file=%s" % (self.dir / "upnp.leases"),
            "upnp_table_name=lab", "upnp_nat_table_name=lab", "upnp_forward_chain=miniupnpd",
            "upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd",
        ]
        if self.igd_v1:
            lines.append("force_igd_desc_v1=yes")
        if self.stun:
            lines += ["ext_perform_stun=yes", "ext_stun_host=%s" % self.WAN_HOST, "ext_stun_port=3478"]
        else:
            lines.append("ext_perform_stun=no")
        lines += list(self.miniupnpd_extra)
        # external ports >= 1024 (miniupnpd's usual default); any internal port, so NAS 443/22 can be mapped
        lines += ["allow 1024-65535 %s 1-65535" % self.LAN_NET, "deny 0-65535 0.0.0.0/0 0-65535"]
        return "\n".join(lines) + "\n"

    def start_miniupnpd(self) -> None:
        self._write("miniupnpd.conf", self.miniupnpd_conf())
        self._miniupnpd_runs += 1
        self.spawn("router", [MINIUPNPD, "-d", "-f", str(self.dir / "miniupnpd.conf"),
                              "-P", str(self.dir / "miniupnpd.pid")], "miniupnpd")
        self.wait_port("router", self.HTTP_PORT)
        if self.stun:
            try:
                wait_for("miniupnpd to enable port forwarding (STUN)",
                         lambda: "Port forwarding is now enabled" in self.miniupnpd_log(), error=LabError)
            except LabError as exc:
                raise LabError("%s:\n%s" % (exc, self.miniupnpd_log()[-3000:])) from None

    def restart_miniupnpd(self) -> None:
        self._stop("miniupnpd")
        self.start_miniupnpd()

    def miniupnpd_log(self) -> str:
        return self.log("miniupnpd")

    def upnpc(self, role: str, *args: str, discover: bool = False, check: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess:
        """``upnpc -i`` in ``role``; skips SSDP (``-u rootDesc``) unless ``discover``."""
        head = ["upnpc", "-i"] + ([] if discover else ["-u", self.igd_location])
        return self.run(role, head + list(args), check=check, timeout=timeout)

    # ------------------------------------------------------------------ static forwards and probes
    def add_forward(self, ext_port: int, to_addr: str, to_port: int, proto: str = "tcp") -> None:
        """A static port forward on the router (like one set by hand in its admin page)."""
        self.forwards.append((ext_port, to_addr, to_port, proto))
        self._apply_forwards()

    def remove_forward(self, ext_port: int, proto: str = "tcp") -> None:
        self.forwards = [f for f in self.forwards if (f[0], f[3]) != (ext_port, proto)]
        self._apply_forwards()

    def _apply_forwards(self) -> None:
        rules = ["flush chain inet lab static_prerouting", "flush chain inet lab static_forward"]
        for ext, addr, port, proto in self.forwards:
            if ":" in addr:  # IPv6: no NAT, just let it through
                rules.append('add rule inet lab static_forward iifname "r-wan" ip6 daddr %s %s dport %d accept'
                             % (addr, proto, port))
                continue
            rules.append('add rule inet lab static_prerouting iifname "r-wan" %s dport %d dnat ip to %s:%d'
                         % (proto, ext, addr, port))
            rules.append('add rule inet lab static_forward iifname "r-wan" ip daddr %s %s dport %d ct status dnat '
                         "accept" % (addr, proto, port))
        self.run("router", ["nft", "-f", "-"], input="\n".join(rules) + "\n")

    def http_get(self, role: str, url: str, timeout: float = 10) -> Optional[str]:
        """GET ``url`` from ``role`` with curl (-k: the lab's certificate is self-signed); None on failure."""
        result = self.run(role, ["curl", "-sS", "-k", "-m", str(timeout), "-g", url], check=False, timeout=timeout + 5)
        return result.stdout if result.returncode == 0 else None

    def tcp_open(self, role: str, host: str, port: int, timeout: float = 5) -> bool:
        code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), %f).close()\n"
                "except OSError:\n sys.exit(1)" % timeout)
        return self.python(role, code, host, str(port), timeout=timeout + 10).returncode == 0

    # ------------------------------------------------------------------ helpers
    def _write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path


@atexit.register
def _teardown_leftovers() -> None:
    for lab in list(_LIVE_LABS):
        lab.down()
