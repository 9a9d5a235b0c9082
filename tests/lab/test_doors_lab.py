"""Every door, with real services in ns nas behind the real miniupnpd router: a real Samba (smbd, accepting SMB1),
a real FTP server (vsftpd), a web server on 80 and on 8081 with TLS, a port published by a process running as
docker-proxy (as Docker starts one per published port), and a UPnP mapping made "as Plex" by miniupnpc.
The agent (its CLI, on a QTS tree whose /proc is the namespace's own) names each door, says who opened each
router port and what it leads to, and the callback prober (lab mode, in ns wan) verifies them from outside."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from tests.support.netlab import Lab
from tests.support.qts import LAB_ULINUX, ini_text, merged
from tests.support.reachlab import fake_nas, start_prober, verdicts

pytestmark = [
    pytest.mark.skipif(shutil.which("smbd") is None, reason="Samba is not installed (Debian package samba)"),
    pytest.mark.skipif(shutil.which("vsftpd") is None, reason="vsftpd is not installed (Debian package vsftpd)"),
]

DOORS = {"Samba": {"Enable": "TRUE"}, "FTP": {"Enable": "TRUE", "Port": 21},
         "QWEB": {"Enable": 1, "Port": 80, "SSL_PORT": 8081}}


def smb_conf(state: Path) -> str:
    dirs = {name: state / name for name in ("lock", "state", "cache", "private", "pid", "ncalrpc", "share")}
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    return ("[global]\n\tworkgroup = LAB\n\tserver min protocol = NT1\n\tdisable netbios = yes\n\tsmb ports = 445\n"
            "\tlock directory = {lock}\n\tstate directory = {state}\n\tcache directory = {cache}\n"
            "\tprivate dir = {private}\n\tpid directory = {pid}\n\tncalrpc dir = {ncalrpc}\n"
            "\tpassdb backend = tdbsam:{private}/passdb.tdb\n\tload printers = no\n\tprinting = bsd\n"
            "\tprintcap name = /dev/null\n\n[Public]\n\tpath = {share}\n").format(**dirs)


def start_doors(lab: Lab, root: Path, work: Path) -> None:
    conf = root / "etc/config/smb.conf"  # the file the agent reads is the one smbd runs with
    conf.write_text(smb_conf(work / "samba"))
    lab.spawn("nas", ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)], "smbd")
    empty = work / "ftp-empty"
    empty.mkdir()
    ftp_conf = work / "vsftpd.conf"
    ftp_conf.write_text("listen=YES\nlisten_ipv6=NO\nlisten_port=21\nanonymous_enable=YES\nno_anon_password=YES\n"
                        "anon_root=%s\nlocal_enable=NO\nsecure_chroot_dir=%s\nftpd_banner=lab FTP\nbackground=NO\n"
                        "seccomp_sandbox=NO\n" % (empty, empty))
    lab.spawn("nas", ["vsftpd", str(ftp_conf)], "vsftpd")
    lab.start_http("nas", 80, body="the Web Server")
    lab.start_http("nas", 8081, body="the Web Server over TLS", tls=True)
    lab.start_http("nas", 32400, body="Plex Web")
    # Docker starts one docker-proxy per published port; this one is a web server under that name.
    script = lab.dir / "server.py"
    lab.spawn("nas", ["bash", "-c", 'exec -a docker-proxy "$0" -u "$1" 8096 0.0.0.0 jellyfin "" "" -proto tcp '
                      "-host-ip 0.0.0.0 -host-port 8096 -container-ip 172.17.0.2 -container-port 8096",
                      sys.executable, str(script)], "docker-proxy")
    for port in (445, 21, 8096):
        lab.wait_port("nas", port)


def check(lab: Lab, root: Path, ini: Path) -> Dict[str, Any]:
    out = lab.python("nas", "exposure_guard", "check", "--root", str(root), "--settings", str(ini), "--json",
                     timeout=240)
    assert out.returncode in (0, 1), out.stderr[-3000:]
    report = json.loads(out.stdout)
    return {f["id"]: f for f in report["findings"]}


def test_every_door_is_named_owned_and_verified(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    nas = fake_nas(tmp_path, lab, prober.url)
    root = nas["root"]
    (root / "etc/config/uLinux.conf").write_text(ini_text(merged(LAB_ULINUX, DOORS)))
    os.symlink("/proc", str(root / "proc"))  # the agent runs in ns nas: its listeners and processes are real
    start_doors(lab, root, tmp_path)
    lab.upnpc("nas", "-e", "Plex Media Server", "-a", Lab.NAS, "32400", "32400", "TCP")
    for external, internal in ((10445, 445), (10021, 21), (10080, 80), (18096, 8096)):
        lab.upnpc("nas", "-e", "libminiupnpc", "-a", Lab.NAS, str(internal), str(external), "TCP")

    found = check(lab, root, nas["ini"])

    # the doors, from the NAS's own settings and what really listens
    smb = found["service.smb"]
    assert smb["status"] == "fail" and "accepts SMB1: the lowest version is NT1" in smb["summary"], smb
    assert smb["evidence"]["listener"]["listening"] is True
    assert found["service.ftp"]["status"] == "fail" and found["service.ftp"]["evidence"]["listener"]["listening"]
    assert found["service.webserver"]["status"] == "fail"
    published = found["containers.published"]
    assert published["status"] == "fail" and "8096/tcp → 172.17.0.2:8096" in published["summary"], published

    # who opened each router port, and what it leads to
    mappings = found["router.upnp-mappings"]
    rows = {r["external"]: r for r in mappings["evidence"]["mappings_to_this_nas"]}
    assert set(rows) == {"TCP 32400", "TCP 10445", "TCP 10021", "TCP 10080", "TCP 18096"}
    assert rows["TCP 32400"]["opened_by"]["label"] == "Plex Media Server"
    assert rows["TCP 32400"]["opened_by"]["why"] == "its description names 'plex'"
    assert rows["TCP 18096"]["opened_by"]["kind"] == "container"
    assert {rows[k]["opened_by"]["kind"] for k in ("TCP 10445", "TCP 10021", "TCP 10080")} == {"unknown"}
    assert (rows["TCP 10445"]["leads_to"], rows["TCP 10021"]["leads_to"], rows["TCP 10080"]["leads_to"]) == (
        "SMB", "FTP", "Web Server HTTP")
    assert "TCP 10021 → %s:21 'libminiupnpc' (FTP, opened by unknown software)" % Lab.NAS in mappings["summary"]
    assert "TCP 18096 → %s:8096 'libminiupnpc' (container 172.17.0.2, opened by container 172.17.0.2" % Lab.NAS \
        in mappings["summary"]

    # IPv6 pinholes: the real miniupnpd offers WANIPv6FirewallControl and says whether LAN hosts may open
    # pinholes; IGD:2 has no action to list them, and the finding says so
    pinholes = mappings["evidence"]["ipv6_pinholes"]
    state = pinholes["services"][0]
    assert pinholes["offered"] is True and "error" not in state, pinholes
    assert isinstance(state["firewall_enabled"], bool) and isinstance(state["inbound_pinhole_allowed"], bool)
    if state["inbound_pinhole_allowed"]:
        assert "cannot be listed" in pinholes["note"]

    # the callback: every door asked, each verified from outside where it can be told apart
    services = found["reachability.services"]
    assert services["status"] == "fail", services["summary"]
    seen = verdicts(services)
    assert seen["ipv4:10021"]["state"] == "verified" and seen["ipv4:10021"]["matched_by"] == "banner"
    assert seen["ipv4:10080"]["state"] == "verified" and seen["ipv4:10080"]["matched_by"] == "http"
    assert seen["ipv4:18096"]["state"] == "verified"
    assert seen["ipv4:32400"]["state"] == "verified"
    # SMB says nothing until the client speaks: open from outside, but not provable as this NAS
    assert seen["ipv4:10445"]["state"] == "open-unverified"
    asked = {v["port"] for v in services["evidence"]["ports"]}
    assert {445, 8081, 8096, 21, 80} <= asked  # the doors themselves, asked on the public address too
    assert all(target == Lab.ROUTER_WAN for target in prober.connect_targets())  # only ever the caller
    requests = prober.requests_logged(1)
    assert 1 <= len(requests) <= 4, requests


DRIVER = r"""
import json, sys
from pathlib import Path
from exposure_guard.checks.runner import run_checks
from exposure_guard.context import CheckContext
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
# the tree stands for the live NAS: its own commands (here iptables-save) may run
ctx = CheckContext(QtsRoot(sys.argv[1], use_tools=True), load_settings(Path(sys.argv[2])))
report, _ = run_checks(ctx, only=sys.argv[3].split(","))
print(json.dumps({f.id: {"status": f.status, "severity": f.severity, "summary": f.summary, "evidence": f.evidence}
                  for f in report.findings}, default=str))
"""

QUFIREWALL_RULES = ["-N QUFIREWALL", "-A QUFIREWALL -i lo -j ACCEPT",
                    "-A QUFIREWALL -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                    "-A QUFIREWALL -s 10.77.0.0/24 -j ACCEPT", "-A QUFIREWALL -j DROP", "-A INPUT -j QUFIREWALL"]


@pytest.mark.skipif(shutil.which("iptables") is None or shutil.which("iptables-save") is None,
                    reason="iptables is not installed")
def test_a_lan_only_qufirewall_is_read_from_the_kernel_and_holds(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    nas = fake_nas(tmp_path, lab, prober.url)
    root = nas["root"]
    (root / "etc/config/qpkg.conf").write_text(
        "[qufirewall]\nName = qufirewall\nVersion = 2.6.1\nEnable = TRUE\nQPKG_File = qufirewall.qpkg\n"
        "Install_Path = /share/CACHEDEV1_DATA/.qpkg/qufirewall\n")
    (root / "etc/config/QuFirewall.conf").write_text("[Global]\nfirewall_status = 1\n")
    (root / "sbin").mkdir()
    os.symlink(shutil.which("iptables-save") or "", str(root / "sbin/iptables-save"))  # the real one, in ns nas
    for rule in QUFIREWALL_RULES:  # QuFirewall's chain, as the kernel of the NAS holds it
        lab.run("nas", ["iptables"] + rule.split())
    lab.upnpc("nas", "-e", "QNAP web admin", "-a", Lab.NAS, "8080", "8080", "TCP")

    out = lab.python("nas", DRIVER, str(root), str(nas["ini"]),
                     "service.firewall,router.upnp-mappings,reachability.admin", timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    firewall = found["service.firewall"]
    assert firewall["status"] == "pass" and "its rules admit only LAN sources" in firewall["summary"], firewall
    assert firewall["evidence"]["live_rules"]["rules"] == 4
    mappings = found["router.upnp-mappings"]
    assert mappings["status"] == "fail" and mappings["severity"] == "high", mappings  # critical, one step lower
    assert "QuFirewall admits only LAN sources" in mappings["summary"]
    # and the callback agrees: what the router forwards from the internet is dropped on the NAS
    admin = found["reachability.admin"]
    assert admin["status"] == "pass", admin["summary"]
    assert verdicts(admin)["ipv4:8080"]["state"] == "filtered"
