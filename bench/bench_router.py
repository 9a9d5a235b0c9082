"""Router audit figures: time to audit IGD tables of 10 / 100 / 500 mappings as a ratio to ``upnpc -l`` on
the same target in the same run, SSDP discovery time, and behaviour against a slow-drip hostile device.

Targets (printed with every figure):
- real: Debian's miniupnpd in the network-namespace lab (tests/support/netlab.py), agent and upnpc both run
  in the nas namespace; needs root + miniupnpd. miniupnpd 2.3.1 (nftables) gets very slow with many
  mappings (500 took 15 min to add and 6 min to list; see docs/lab.md#Scale: many mappings), so it is used
  up to ``--real`` sizes only.
- stand-in: the loopback IGD stand-in of the unit tests (tests/support/fakeigd.py, real miniupnpd
  answers from an in-memory table) on 127.0.0.1, for every ``--standin`` size; upnpc and the agent both
  read the same stand-in.

Traffic goes only to loopback and to the lab's own namespaces. Usage (from the repository root):
    python3 -m bench.bench_router [--real 10,100] [--standin 10,100,500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple, TypeVar

from tests.support.fakeigd import HostileServer
from tests.support.netlab import Lab
from tests.support.paths import REPO
from tests.support.qts import ini_text, write_tree

from exposure_guard.upnp import soap
from exposure_guard.upnp.audit import find_gateways, read_tables
from exposure_guard.upnp.errors import UpnpError

AUDIT_SNIPPET = """
import json, sys, time
from exposure_guard.upnp import soap
from exposure_guard.upnp.audit import find_gateways, read_tables
prefer = sys.argv[2] == "list"
original = soap.list_mappings
soap.list_mappings = lambda client, cap=soap.MAX_MAPPINGS: original(client, cap, prefer_list=prefer)
t = time.monotonic()
audit = read_tables(find_gateways(sys.argv[1]))
took = time.monotonic() - t
s = audit.services[0]
print(json.dumps({"seconds": took, "count": len(s.mappings), "method": s.method, "error": s.error}))
"""

ADD_SNIPPET = """
import sys
from exposure_guard.upnp import soap
from exposure_guard.upnp.models import WANIP2, PortMapping, WanService
client = soap.SoapClient(WanService(WANIP2, sys.argv[1]))
for i in range(int(sys.argv[2])):
    soap.add_mapping(client, PortMapping("", 20000 + i, "TCP", 20000 + i, sys.argv[3], True, "bench %d" % i, 0))
"""

DISCOVER_SNIPPET = """
import json
from exposure_guard.upnp.ssdp import discover
d = discover(timeout=2.0)
print(json.dumps({"seconds": d.seconds, "answers": len(d.answers)}))
"""

T = TypeVar("T")


def median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def timed(fn: Callable[[], T]) -> Tuple[float, T]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def row(*cells: object) -> None:
    print("  ".join(str(c) for c in cells), flush=True)


def count_upnpc(out: str) -> int:
    return sum(1 for line in out.splitlines() if "->" in line and "exPort->inAddr" not in line)


# ---------------------------------------------------------------------------------------------- real miniupnpd
def bench_real(sizes: List[int], repeat: int) -> None:
    reason = Lab.missing()
    if reason or shutil.which("upnpc") is None:
        print("real miniupnpd: skipped (%s)" % (reason or "upnpc is not installed"))
        return
    print("== real miniupnpd 2.3.1 in the netns lab (agent and upnpc in ns nas; no discovery: -u / igd_url)")
    row("mappings", "add(s)", "upnpc -l (s)", "agent audit (s)", "agent CLI proc (s)", "ratio audit/upnpc",
        "ratio CLI/upnpc", "agent loop-only (s)", "ratio loop/upnpc", "method")
    for n in sizes:
        with Lab() as lab:
            control = lab.igd_location.replace("rootDesc.xml", "ctl/IPConn")
            t0 = time.monotonic()
            lab.python("nas", ADD_SNIPPET, control, str(n), Lab.NAS, check=True, timeout=3600)
            add_s = time.monotonic() - t0
            upnpc_times, audit_times, loop_times, cli_times = [], [], [], []
            method = ""
            root, settings = fake_nas()
            try:
                for _ in range(repeat):
                    took, out = timed(lambda: lab.upnpc("nas", "-l", timeout=3600).stdout)
                    assert count_upnpc(out) == n, out[-500:]
                    upnpc_times.append(took)
                    result = json.loads(lab.python("nas", AUDIT_SNIPPET, lab.igd_location, "list", check=True).stdout)
                    assert result["count"] == n and not result["error"], result
                    audit_times.append(result["seconds"])
                    method = result["method"]
                    result = json.loads(lab.python("nas", AUDIT_SNIPPET, lab.igd_location, "loop", check=True,
                                                   timeout=3600).stdout)
                    assert result["count"] == n, result
                    loop_times.append(result["seconds"])
                    t0 = time.monotonic()
                    proc = lab.python("nas", "exposure_guard", "check", "--root", str(root), "--settings",
                                      str(settings), "--igd", lab.igd_location, "--only", "router.upnp-mappings",
                                      "--json", timeout=3600)
                    cli_times.append(time.monotonic() - t0)
                    assert proc.returncode == 1, proc.stderr
            finally:
                shutil.rmtree(str(root.parent), ignore_errors=True)
            u, a, lo, c = median(upnpc_times), median(audit_times), median(loop_times), median(cli_times)
            row(n, "%.1f" % add_s, "%.3f" % u, "%.3f" % a, "%.3f" % c, "%.3fx" % (a / u), "%.3fx" % (c / u),
                "%.3f" % lo, "%.3fx" % (lo / u), method)

    with Lab() as lab:
        print("== SSDP discovery from ns nas (real miniupnpd answering; agent timeout 2 s, upnpc default 2 s)")
        agent = [json.loads(lab.python("nas", DISCOVER_SNIPPET, check=True).stdout) for _ in range(repeat)]
        assert all(a["answers"] == 1 for a in agent), agent
        with_disc = [timed(lambda: lab.upnpc("nas", "-s", discover=True))[0] for _ in range(repeat)]
        without = [timed(lambda: lab.upnpc("nas", "-s"))[0] for _ in range(repeat)]
        row("agent discover():", "%.3f s" % median([a["seconds"] for a in agent]), "(median of %d)" % repeat)
        row("upnpc -s with SSDP minus with -u:", "%.3f s" % (median(with_disc) - median(without)))


def fake_nas() -> Tuple[Path, Path]:
    base = Path(tempfile.mkdtemp(prefix="bench-router-"))
    root = write_tree(base / "qts", {"System": {"Web Access Port": 8080}}, default=None)
    settings = base / "exposure-guard.ini"
    settings.write_text(ini_text({"agent": {"lan_addresses": Lab.NAS}}))
    return root, settings


# ---------------------------------------------------------------------------------------------- stand-in
def bench_standin(sizes: List[int], repeat: int) -> None:
    have_upnpc = shutil.which("upnpc") is not None
    print("== loopback IGD stand-in (tests/support/fakeigd.py in its own process, IGD:2, 127.0.0.1; "
          "agent in-process)")
    row("mappings", "upnpc -l (s)", "agent list (s)", "ratio", "agent loop-only (s)", "ratio loop/upnpc")
    for n in sizes:
        server = subprocess.Popen([sys.executable, "-m", "tests.support.fakeigd", "igd2", str(n)], cwd=str(REPO),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdin is not None  # both are pipes
        try:
            location = server.stdout.readline().strip()
            upnpc_times, list_times, loop_times = [], [], []
            for _ in range(repeat):
                if have_upnpc:
                    t0 = time.monotonic()
                    proc = subprocess.run(["upnpc", "-i", "-u", location, "-l"], capture_output=True, text=True,
                                          timeout=3600)
                    upnpc_times.append(time.monotonic() - t0)
                    assert count_upnpc(proc.stdout) == n, proc.stdout[-300:]
                t0 = time.monotonic()
                audit = read_tables(find_gateways(location))
                list_times.append(time.monotonic() - t0)
                assert len(audit.services[0].mappings) == n and audit.services[0].method == "GetListOfPortMappings"
                original = soap.list_mappings
                soap.list_mappings = functools.partial(original, prefer_list=False)
                try:
                    t0 = time.monotonic()
                    audit = read_tables(find_gateways(location))
                    loop_times.append(time.monotonic() - t0)
                finally:
                    soap.list_mappings = original
                assert len(audit.services[0].mappings) == n
        finally:
            server.stdin.close()
            server.wait(10)
        u = median(upnpc_times)
        a, lo = median(list_times), median(loop_times)
        row(n, "%.3f" % u if have_upnpc else "n/a", "%.3f" % a, "%.3fx" % (a / u) if have_upnpc else "n/a",
            "%.3f" % lo, "%.3fx" % (lo / u) if have_upnpc else "n/a")


# ---------------------------------------------------------------------------------------------- hostile
def bench_hostile() -> None:
    print("== hostile device on loopback (agent defaults: 5 s per exchange, 256 KiB, 120 s per audit)")
    for mode in ("drip-body", "drip-headers", "silent", "huge"):
        with HostileServer(mode, interval=0.1) as server:
            took, outcome = timed(lambda: _try(lambda: find_gateways(server.url)))
            row("agent vs %-12s" % mode, "%.2f s" % took, outcome[:110], "(%d bytes dripped/sent)" % server.bytes_sent)
    if shutil.which("upnpc") is None:
        return
    with HostileServer("drip-body", interval=0.1) as server:
        try:
            took, proc = timed(lambda: subprocess.run(["upnpc", "-i", "-u", server.url, "-l"], capture_output=True,
                                                      text=True, timeout=30))
            row("upnpc vs drip-body", "%.2f s" % took, "rc %d" % proc.returncode)
        except subprocess.TimeoutExpired:
            row("upnpc vs drip-body", "> 30 s", "still reading when killed (no total deadline)")


def _try(fn: Callable[[], object]) -> str:
    try:
        fn()
    except UpnpError as exc:
        return "%s: %s" % (type(exc).__name__, exc)
    return "no error?!"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", default="10,100", help="table sizes on the real miniupnpd (default 10,100)")
    parser.add_argument("--standin", default="10,100,500", help="table sizes on the loopback stand-in")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = lambda text: [int(x) for x in text.split(",") if x.strip()]  # noqa: E731
    print("bench_router: python %s, pid %d" % (sys.version.split()[0], os.getpid()))
    bench_standin(sizes(args.standin), args.repeat)
    bench_hostile()
    bench_real(sizes(args.real), args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
