"""Reachability additions on top of tests.support.netlab.Lab: the real prober in the ``wan`` namespace, a connection
counter there (nftables, the "capture"), and a driver that runs the agent's reachability checks in ``nas``.

Nothing here edits the harness; everything it starts is spawned through ``Lab.spawn`` (killed at
``Lab.down``) and every rule lives in the lab's namespaces.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from tests.support.netlab import Lab
from tests.support.paths import SRC
from tests.support.qts import LAB_ULINUX, ini_text, write_tree
from tests.support.wait import wait_for

PROBER_PORT = 8443
LAB_ALLOW = "198.51.100.0/24,2001:db8::/32"

# Runs inside nas: the agent's reachability checks through the Python API (so router.upnp-wan-exposed is
# exercised even while the registry still carries the router family's placeholder for it).
DRIVER = r'''
import json, socket, sys, traceback
from pathlib import Path
root, ini, resolve = sys.argv[1], sys.argv[2], sys.argv[3]
if resolve:  # "name=addr,addr": a prober name with A and AAAA records, without touching /etc/hosts
    name, addrs = resolve.split("=")
    real = socket.getaddrinfo
    def fake(host, *args, **kwargs):
        if host == name:
            found = []
            for address in addrs.split(","):
                found += real(address, *args, **kwargs)
            return found
        return real(host, *args, **kwargs)
    socket.getaddrinfo = fake
from exposure_guard.checks import admin, reachability as r, router
from exposure_guard.context import CheckContext
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
ctx = CheckContext(QtsRoot(root), load_settings(Path(ini)))
try:
    facts = ctx.router
except Exception:
    traceback.print_exc()
    facts = None
out = {"router.external_ip": facts.external_ip if facts is not None else None}
for check_id, evaluate in (("reachability.admin", r.reachability_admin),
                           ("reachability.services", r.reachability_services),
                           ("router.upnp-wan-exposed", router.upnp_wan_exposed),
                           ("admin.default-cert", admin.default_cert)):
    try:
        o = evaluate(ctx)
        out[check_id] = {"status": o.status, "severity": o.severity, "summary": o.summary, "evidence": o.evidence}
    except Exception as exc:
        out[check_id] = {"status": "error", "summary": traceback.format_exc()}
print(json.dumps(out, default=str))
'''


@dataclass
class Prober:
    lab: Lab
    name: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return "http://%s:%d" % (Lab.WAN_HOST, self.port)

    def records(self, event: str = "") -> List[Dict[str, Any]]:
        try:
            lines = self.log_path.read_text().splitlines()
        except OSError:
            return []
        return [r for r in (json.loads(line) for line in lines if line.strip()) if not event or r.get("event") == event]

    def connect_targets(self) -> List[str]:
        return [r["target"] for r in self.records("connect")]

    def requests_logged(self, count: int) -> List[Dict[str, Any]]:
        """The request log lines once there are ``count`` of them: each is written after its answer went out."""
        return wait_for("%d request log line(s) of %s" % (count, self.name),
                        lambda: self.records("request") if len(self.records("request")) >= count else [])


def start_prober(lab: Lab, *extra: str, port: int = PROBER_PORT, lab_mode: bool = True, ipv6: bool = False,
                 name: str = "prober") -> Prober:
    """The real prober (``python -m exposure_guard_prober serve``) in ns wan, JSON log with every connect."""
    log = lab.dir / ("%s.jsonl" % name)
    argv = ["env", "PYTHONPATH=%s" % SRC, sys.executable, "-m", "exposure_guard_prober", "serve",
            "--listen", "%s:%d" % (Lab.WAN_HOST, port), "--log-connects", "--log-file", str(log),
            # connect: a SYN to an open port is answered by the kernel at once, so 1 s only bounds the wait
            # on filtered ones; reads and the whole job get room for a loaded machine
            "--connect-timeout", "1", "--io-timeout", "5", "--deadline", "20"]
    if ipv6:
        argv += ["--listen", "[%s]:%d" % (Lab.WAN_HOST6, port)]
    if lab_mode:
        argv += ["--lab-allow", LAB_ALLOW]
    lab.spawn("wan", argv + list(extra), name)
    lab.wait_port("wan", port)
    return Prober(lab, name, port, log)


def start_capture(lab: Lab, caller: str = Lab.ROUTER_WAN, caller6: str = Lab.NAS6) -> None:
    """Count every new outbound connection/flow of ns wan: to the caller, and to anything else."""
    lab.run("wan", ["nft", "-f", "-"], input="""
table inet capture {
  counter to_caller { }
  counter to_other { }
  chain out {
    type filter hook output priority 0; policy accept;
    ct state new ip daddr %s counter name "to_caller" accept
    ct state new ip6 daddr %s counter name "to_caller" accept
    ct state new counter name "to_other"
  }
}
""" % (caller, caller6))


def capture_counts(lab: Lab) -> Dict[str, int]:
    out = {}
    for name in ("to_caller", "to_other"):
        text = lab.run("wan", ["nft", "list", "counter", "inet", "capture", name]).stdout
        match = re.search(r"packets (\d+)", text)
        out[name] = int(match.group(1)) if match else -1
    return out


def fake_nas(directory: Path, lab: Lab, prober_url: str, ipv6: bool = False,
             extra_ini: Optional[Dict[str, str]] = None) -> Dict[str, Path]:
    """The lab NAS's QTS tree (LAB_ULINUX) and agent settings: LAN address, the lab's IGD, ``prober_url``;
    ``extra_ini`` adds keys to [reachability]."""
    root = write_tree(directory / "qts", LAB_ULINUX, default=None)
    addresses = Lab.NAS + (" " + Lab.NAS6 if ipv6 else "")
    ini = directory / "exposure-guard.ini"
    ini.write_text(ini_text({"agent": {"lan_addresses": addresses}, "router": {"igd_url": lab.igd_location},
                             "reachability": dict({"prober_url": prober_url, "timeout": 60, "local_probe": "yes"},
                                                   **(extra_ini or {}))}))
    return {"root": root, "ini": ini}


def run_checks(lab: Lab, nas: Dict[str, Path], resolve: str = "") -> Dict[str, Any]:
    """The agent's reachability checks, run inside ns nas; {check id: outcome dict}."""
    result = lab.python("nas", DRIVER, str(nas["root"]), str(nas["ini"]), resolve, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError("driver output: %s\n%s" % (result.stdout[-2000:], result.stderr[-2000:])) from None


def verdicts(outcome: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """{"ipv4:8080": verdict, ...} from a reachability outcome's evidence."""
    return {"%s:%d" % (v["family"], v["port"]): v for v in outcome["evidence"].get("ports", [])}
