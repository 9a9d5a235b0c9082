"""Every door, timed: a full ``exposure-guard check`` of a NAS with 30 listening app pages and 50 UPnP mappings
to it, against the floor of what such a check must at least do — ``upnpc -l`` (read the router's table) plus
one callback round trip (one prober request of 16 ports) — measured in the same lab, in the same run.
Also prints how many prober requests one check makes.

Real components only: Debian's miniupnpd router and the real prober (lab mode) in the network-namespace
lab (tests/support/netlab.py), the agent's CLI and ``upnpc`` in ns nas. Traffic goes only to the lab's own
namespaces. Needs root, miniupnpd and miniupnpc. Usage (from the repository root):
    python3 -m bench.bench_doors [--services 30] [--mappings 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List

from tests.support.netlab import Lab
from tests.support.qts import LAB_ULINUX, ini_text, write_tree
from tests.support.reachlab import start_prober

BASE_PORT = 21000  # the app pages listen on 21000.., the router maps 31000.. to them

# One process in ns nas serving a small HTTP page on every port it is given (the apps' web pages).
PAGES = r"""
import socket, sys, threading
ports = [int(p) for p in sys.argv[1:]]
def serve(sock, port):
    while True:
        conn, _ = sock.accept()
        try:
            conn.settimeout(5)
            conn.recv(4096)
            body = b"app page %d" % port
            conn.sendall(b"HTTP/1.0 200 OK\r\nServer: app/%d\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (port, len(body), body))
        except OSError:
            pass
        finally:
            conn.close()
for port in ports:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(64)
    threading.Thread(target=serve, args=(sock, port), daemon=True).start()
print("serving", len(ports), flush=True)
threading.Event().wait()
"""

ADD_MAPPINGS = r"""
import sys
from exposure_guard.upnp import soap
from exposure_guard.upnp.models import WANIP2, PortMapping, WanService
client = soap.SoapClient(WanService(WANIP2, sys.argv[1]))
base, count, nas = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for i in range(count):
    soap.add_mapping(client, PortMapping("", base + 10000 + i, "TCP", base + i, nas, True, "bench app %d" % i, 0))
"""

ONE_CALLBACK = r"""
import json, sys, time
from exposure_guard.probeclient import PortAsk, ask
ports = [PortAsk(int(p)) for p in sys.argv[2].split(",")]
t = time.monotonic()
answer = ask(sys.argv[1], ports, family="ipv4", timeout=60, upnp=True)
print(json.dumps({"seconds": time.monotonic() - t, "open": sum(1 for r in answer.ports.values() if r["state"] == "open")}))
"""


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def qpkg_conf(services: int) -> str:
    sections = []
    for i in range(services):
        sections.append("[BenchApp%d]\nName = BenchApp%d\nVersion = 1.0.%d\nEnable = TRUE\nWeb_Port = %d\n"
                        "Install_Path = /share/CACHEDEV1_DATA/.qpkg/BenchApp%d\n" % (i, i, i, BASE_PORT + i, i))
    return "\n".join(sections)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=30)
    parser.add_argument("--mappings", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = Lab.missing()
    if reason:
        print("skipped: %s" % reason)
        return 0
    work = Path(tempfile.mkdtemp(prefix="eg-bench-doors-"))
    print("== every door: %d listening app pages, %d UPnP mappings to the NAS; real miniupnpd + prober (lab mode); "
          "agent and upnpc in ns nas; %d runs each, medians" % (args.services, args.mappings, args.repeat))
    with Lab() as lab:
        # The default rate (6 requests a minute, burst 4 per source) would refuse the repeated runs of the
        # bench; the per-request work is the same with a higher limit.
        prober = start_prober(lab, "--rate", "600", "--burst", "50")
        script = lab.dir / "pages.py"
        script.write_text(PAGES)
        ports = [BASE_PORT + i for i in range(max(args.services, args.mappings))]
        lab.spawn("nas", [sys.executable, "-u", str(script)] + [str(p) for p in ports[:args.services]], "pages")
        lab.wait_port("nas", BASE_PORT + args.services - 1)
        control = "http://%s:%d/ctl/IPConn" % (Lab.ROUTER_LAN, Lab.HTTP_PORT)
        started = time.monotonic()
        lab.python("nas", ADD_MAPPINGS, control, str(BASE_PORT), str(args.mappings), Lab.NAS, check=True,
                   timeout=3600)
        print("  setup: %d mappings added in %.1f s" % (args.mappings, time.monotonic() - started))
        root = write_tree(work / "qts", LAB_ULINUX, default=None, files={"etc/config/qpkg.conf":
                                                                        qpkg_conf(args.services)})
        os.symlink("/proc", str(root / "proc"))  # the agent sees ns nas's own listeners
        ini = work / "exposure-guard.ini"
        ini.write_text(ini_text({"agent": {"lan_addresses": Lab.NAS}, "router": {"igd_url": lab.igd_location},
                                 "reachability": {"prober_url": prober.url, "timeout": 120, "local_probe": "yes"}}))
        checks, upnpc, callbacks, requests = [], [], [], []
        for _ in range(args.repeat):
            before = len(prober.records("request"))
            t = time.monotonic()
            out = lab.python("nas", "exposure_guard", "check", "--root", str(root), "--settings", str(ini), "--json",
                             timeout=600)
            checks.append(time.monotonic() - t)
            report = json.loads(out.stdout)
            requests.append(len(prober.requests_logged(before + 1)) - before)
            t = time.monotonic()
            listed = lab.upnpc("nas", "-l", timeout=600)
            upnpc.append(time.monotonic() - t)
            sixteen = ",".join(str(31000 + i) for i in range(16))
            one = json.loads(lab.python("nas", ONE_CALLBACK, prober.url, sixteen, check=True, timeout=120).stdout)
            callbacks.append(one["seconds"])
        found = {f["id"]: f for f in report["findings"]}
        services = found["reachability.services"]
        verified = sum(1 for v in services["evidence"].get("ports", []) if v["state"] == "verified")
        mapped = len(found["router.upnp-mappings"]["evidence"].get("mappings_to_this_nas", []))
        floor = median(upnpc) + median(callbacks)
        print("  upnpc -l (lists %d mappings):              %6.2f s" % (listed.stdout.count("bench app"), median(upnpc)))
        print("  one callback round trip (16 ports):        %6.2f s" % median(callbacks))
        print("  floor (upnpc -l + one callback):           %6.2f s" % floor)
        print("  exposure-guard check (all %d checks, CLI): %6.2f s   = %.2fx the floor (goal <= 1.5x)"
              % (len(report["findings"]), median(checks), median(checks) / floor))
        print("  prober requests per check: %s; ports verified from outside: %d; mappings to the NAS listed: %d"
              % (sorted(set(requests)), verified, mapped))
        notes = [n for n in services["evidence"].get("notes", []) if "not asked" in n]
        if notes:
            print("  note: %s" % notes[0][:300])
    return 0


if __name__ == "__main__":
    sys.exit(main())
