"""Prober figures: the real `exposure-guard-prober serve` process, driven like agents drive it.

    python3 -m bench.bench_prober [--requests 1000] [--concurrency 200] [--mode auto|lab|loopback]   (repo root)

1. All-filtered callback (lab, needs root): 16 ports that the router DROPs; goal = one connect timeout
   + 200 ms (ports are probed in parallel). Measured for --connect-timeout 1 and 3, UPnP test off and on.
2. Load: N probe requests, C at a time, each asking 4 ports (HTTP, HTTPS+TLS, 2 closed) of the caller.
   lab: clients in ns nas behind the router's NAT, targets forwarded to the nas web servers;
   loopback: prober and targets on 127.0.0.1 (no root needed). Rate limits are lifted (--rate/--burst),
   the concurrency cap is set to C and, separately, left at its default 32 to show queueing.

Traffic: loopback, or the lab's own namespaces (tests/support/netlab.py) only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from tests.support.paths import SRC as SRC_PATH

SRC = str(SRC_PATH)

# Runs in the client's namespace (or locally): N requests, C threads; prints one JSON line.
LOAD = r'''
import json, sys, time, threading
from concurrent.futures import ThreadPoolExecutor
import requests
url, total, conc, ports = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
local = threading.local()
def one(i):
    if not hasattr(local, "s"):
        local.s = requests.Session(); local.s.trust_env = False
    body = {"nonce": "bench-%08d" % i, "ports": ports, "upnp": False}
    t = time.perf_counter()
    srv = None
    try:
        r = local.s.post(url + "/v1/probe", json=body, timeout=60)
        code = r.status_code
        ok = code == 200 and len(r.json()["ports"]) == len(ports)
        if ok:
            srv = r.json()["duration_ms"]
            ok = [p["state"] for p in r.json()["ports"]] == ["open", "open", "closed", "closed"]
    except Exception as exc:
        code, ok = type(exc).__name__, False
    return time.perf_counter() - t, code, ok, srv
start = time.perf_counter()
with ThreadPoolExecutor(conc) as pool:
    results = list(pool.map(one, range(total)))
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "lat": [r[0] for r in results], "codes": [r[1] for r in results],
                  "ok": sum(1 for r in results if r[2]), "srv": [r[3] for r in results if r[3] is not None]}))
'''

ONE = r'''
import json, sys, time, requests
url, ports, upnp = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1"
out = []
for i in range(int(sys.argv[4])):
    t = time.perf_counter()
    r = requests.post(url + "/v1/probe", json={"nonce": "filtered-%04d" % i, "ports": ports, "upnp": upnp},
                      timeout=60)
    doc = r.json()
    out.append({"rtt": time.perf_counter() - t, "server_ms": doc["duration_ms"],
                "states": sorted({p["state"] for p in doc["ports"]})})
print(json.dumps(out))
'''

# Targets for the lab load test, in ns nas: HTTP and HTTPS with a backlog that does not drop SYNs
# (the harness's demo servers use http.server's backlog of 5, which would measure the target, not the prober).
TARGET = r'''
import asyncio, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
PAGE = b"HTTP/1.0 200 OK\r\nServer: bench-nas\r\nContent-Type: text/html\r\n\r\n<title>NAS</title>"
async def serve(reader, writer):
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(PAGE)
        await writer.drain()
    except Exception:
        pass
    writer.close()
async def main():
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    await asyncio.start_server(serve, "0.0.0.0", 18080, backlog=4096)
    await asyncio.start_server(serve, "0.0.0.0", 18443, ssl=context, backlog=4096)
    print("serving", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''

FREE_FLOW = ["--rate", "1000000", "--burst", "1000000", "--per-client", "100000",
             "--max-connections-per-source", "100000"]  # all load comes from one address


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))]


def summarise(label: str, data: Dict[str, Any]) -> None:
    lat = [x * 1000 for x in data["lat"]]
    codes: Dict[str, int] = {}
    for code in data["codes"]:
        codes[str(code)] = codes.get(str(code), 0) + 1
    srv = data.get("srv") or [0]
    print("  %-40s %5d req in %6.2f s = %6.1f req/s | client latency ms p50 %6.1f p95 %6.1f p99 %6.1f max %6.1f"
          " | probe job ms p50 %5.0f p95 %5.0f | HTTP %s, all 4 states right: %d"
          % (label, len(lat), data["wall"], len(lat) / data["wall"], statistics.median(lat), pct(lat, 95),
             pct(lat, 99), max(lat), statistics.median(srv), pct(srv, 95),
             " ".join("%s:%d" % kv for kv in sorted(codes.items())), data["ok"]))


def prober_argv(listen: str, allow: str, log: str, extra: List[str]) -> List[str]:
    return ["env", "PYTHONPATH=" + SRC, sys.executable, "-m", "exposure_guard_prober", "serve", "--listen", listen,
            "--lab-allow", allow, "--log-file", log] + extra


# ---------------------------------------------------------------- lab (root)
def lab_figures(total: int, conc: int) -> None:
    from tests.support.netlab import Lab

    reason = Lab.missing(igd=False)
    if reason:
        print("lab figures skipped: " + reason)
        return
    with Lab(igd=False) as lab:
        try:
            allow = "198.51.100.0/24"
            # 1. all ports filtered: the router drops them on its WAN side
            lab.run("router", ["nft", "-f", "-"], input="""
table inet bench {
  chain input {
    type filter hook input priority -10; policy accept;
    iifname "r-wan" tcp dport 10000-10015 drop
  }
}
""")
            ports = [{"port": p} for p in range(10000, 10016)]
            print("1. 16-port callback, all ports filtered (router DROP), lab, 5 runs each:")
            for timeout in ("1", "3"):
                for upnp in ("0", "1"):
                    name = "p%s%s" % (timeout, upnp)
                    port = 8500 + int(timeout) * 10 + int(upnp)
                    lab.spawn("wan", prober_argv("%s:%d" % (Lab.WAN_HOST, port), allow, str(lab.dir / (name + ".log")),
                                                 FREE_FLOW + ["--connect-timeout", timeout, "--deadline", "10"]), name)
                    lab.wait_port("wan", port)
                    out = lab.python("nas", ONE, "http://%s:%d" % (Lab.WAN_HOST, port), json.dumps(ports), upnp, "5",
                                     check=True, timeout=120)
                    runs = json.loads(out.stdout)
                    assert all(r["states"] == ["filtered"] for r in runs), runs
                    server = [r["server_ms"] for r in runs]
                    rtt = [r["rtt"] * 1000 for r in runs]
                    goal = float(timeout) * 1000 + 200
                    print("  connect-timeout %ss, upnp %-3s: server %5.0f ms (max %5.0f), client round trip %5.0f ms "
                          "(max %5.0f); goal <= %.0f ms: %s" % (timeout, "on" if upnp == "1" else "off",
                                                                statistics.median(server), max(server),
                                                                statistics.median(rtt), max(rtt), goal,
                                                                "met" if max(rtt) <= goal else "MISSED"))
                    lab._stop(name)
            # 2. load against lab targets through NAT
            script = lab.dir / "target.py"
            script.write_text(TARGET)
            cert, key = lab._cert()
            lab.spawn("nas", [sys.executable, "-u", str(script), cert, key], "bench-target")
            lab.wait_port("nas", 18443)
            lab.add_forward(8080, Lab.NAS, 18080)
            lab.add_forward(443, Lab.NAS, 18443)
            load_ports = [{"port": 8080}, {"port": 443, "tls": True}, {"port": 9}, {"port": 10}]
            print("2. %d probe requests, %d concurrent, 4 ports each (HTTP + HTTPS/TLS via DNAT, 2 closed), lab:"
                  % (total, conc))
            for label, extra, port in (("cap = %d" % conc, ["--max-concurrent", str(conc)], 8600),
                                       ("default cap 32, queue-wait 30 s", ["--queue-wait", "30"], 8601),
                                       ("default cap 32, queue-wait 2 s (default)", [], 8602)):
                name = "load%d" % port
                lab.spawn("wan", prober_argv("%s:%d" % (Lab.WAN_HOST, port), allow, str(lab.dir / (name + ".log")),
                                             FREE_FLOW + ["--max-connections", "2048"] + extra), name)
                lab.wait_port("wan", port)
                out = lab.python("nas", LOAD, "http://%s:%d" % (Lab.WAN_HOST, port), str(total), str(conc),
                                 json.dumps(load_ports), check=True, timeout=600)
                summarise(label, json.loads(out.stdout))
                lab._stop(name)
        finally:
            lab.down()


# ---------------------------------------------------------------- loopback (no root)
def loopback_figures(total: int, conc: int) -> None:
    from tests.support.reach import Services

    with tempfile.TemporaryDirectory() as tmp:
        services = Services(Path(tmp))
        procs: List[subprocess.Popen] = []
        try:
            load_ports = [{"port": services.http_port}, {"port": services.https_port, "tls": True},
                          {"port": services.closed}, {"port": 9}]
            print("3. %d probe requests, %d concurrent, 4 ports each, loopback (prober, targets, clients on one "
                  "host):" % (total, conc))
            for index, (label, extra) in enumerate((("cap = %d" % conc, ["--max-concurrent", str(conc)]),
                                                    ("default cap 32, queue-wait 30 s", ["--queue-wait", "30"]))):
                log = os.path.join(tmp, "prober%d.log" % index)
                proc = subprocess.Popen(prober_argv("127.0.0.1:0", "127.0.0.0/8", log,
                                                    FREE_FLOW + ["--max-connections", "2048"] + extra)[2:],
                                        env=dict(os.environ, PYTHONPATH=SRC), stderr=subprocess.DEVNULL)
                procs.append(proc)
                url = _wait_listening(log)
                out = subprocess.run([sys.executable, "-c", LOAD, url, str(total), str(conc), json.dumps(load_ports)],
                                     capture_output=True, text=True, check=True, timeout=600,
                                     env=dict(os.environ, PYTHONPATH=SRC))
                summarise(label, json.loads(out.stdout))
                proc.terminate()
                proc.wait(10)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            services.close()


def _wait_listening(log: str, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            for line in Path(log).read_text().splitlines():
                record = json.loads(line)
                if record.get("event") == "listening":
                    return "http://" + record["addresses"][0]
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("prober did not start")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--mode", choices=("auto", "lab", "loopback"), default="auto")
    args = parser.parse_args(argv)
    print("prober bench: python %s, %d CPU(s)" % (sys.version.split()[0], os.cpu_count() or 0))
    if args.mode in ("auto", "lab"):
        lab_figures(args.requests, args.concurrency)
    if args.mode in ("auto", "loopback"):
        loopback_figures(args.requests, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
