"""router.upnp-mappings against a real miniupnpd router in network namespaces, driven through the CLI
run inside the nas namespace (``ip netns exec NS python3 -m exposure_guard ...``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from tests.support.netlab import Lab
from tests.support.qts import LAB_ULINUX, ini_text, merged, write_tree

pytestmark = pytest.mark.skipif(shutil.which("upnpc") is None, reason="lab: upnpc (miniupnpc) is not installed")

CAM = "10.77.0.20"  # another LAN host with its own mapping


def fake_nas(tmp_path: Path, **router: str) -> Tuple[Path, Path]:
    root = write_tree(tmp_path / "qts", LAB_ULINUX, default=None)
    settings = tmp_path / "exposure-guard.ini"
    settings.write_text(ini_text({"agent": {"lan_addresses": Lab.NAS}, "router": dict({"discover": "yes"}, **router)}))
    return root, settings


def agent(lab: Lab, root: Path, settings: Path, *args: str):
    return lab.python("nas", "exposure_guard", *args[:1], "--root", str(root), "--settings", str(settings),
                      *args[1:], timeout=120)


def check(lab: Lab, root: Path, settings: Path) -> Dict:
    result = agent(lab, root, settings, "check", "--only", "router.upnp-mappings", "--json")
    assert result.returncode in (0, 1), result.stderr
    (finding,) = json.loads(result.stdout)["findings"]
    return finding


UPNPC_LINE = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\d+)->([\d.]+):(\d+)\s+'([^']*)'\s+'([^']*)'\s+(\d+)\s*$", re.M)


def upnpc_list(lab: Lab) -> Set[Tuple[str, int, str, int, str]]:
    out = lab.upnpc("nas", "-l").stdout
    assert "GetGenericPortMappingEntry() returned 713" in out, out
    return {(p, int(e), c, int(i), d) for p, e, c, i, d, _r, _l in UPNPC_LINE.findall(out)}


def agent_list(finding: Dict) -> Set[Tuple[str, int, str, int, str]]:
    rows: List[Dict] = finding["evidence"]["mappings_to_this_nas"] + finding["evidence"]["mappings_to_other_hosts"]
    return {(r["protocol"], r["external_port"], r["internal_client"], r["internal_port"], r["description"])
            for r in rows}


def add(lab: Lab, role: str, client: str, ext: int, port: int, proto: str = "TCP", desc: str = "lab") -> None:
    out = lab.upnpc(role, "-e", desc, "-a", client, str(port), str(ext), proto).stdout
    assert "is redirected to internal %s:%d" % (client, port) in out, out


@pytest.mark.parametrize("igd_v1", [False, True], ids=["igd2", "igd1"])
def test_agent_finds_the_igd_by_ssdp_and_lists_exactly_what_upnpc_lists(make_lab, tmp_path, igd_v1):
    lab = make_lab(igd_v1=igd_v1)
    lab.add_lan_host("cam", CAM)
    add(lab, "nas", Lab.NAS, 8080, 8080, desc="nas admin")
    add(lab, "nas", Lab.NAS, 18443, 443, desc="nas https")
    add(lab, "nas", Lab.NAS, 6881, 6881, "UDP", desc="bt")
    add(lab, "cam", CAM, 9080, 80 + 8000, desc="camera")
    root, settings = fake_nas(tmp_path)
    finding = check(lab, root, settings)
    ev = finding["evidence"]
    assert ev["found_by"] == "ssdp" and ev["discovery"]["answers"][0]["location"] == lab.igd_location
    assert ev["gateways"][0]["service"].endswith("WANIPConnection:%d" % (1 if igd_v1 else 2))
    assert ev["igd_external_ip"] == Lab.ROUTER_WAN and ev["upnp_offered"] is True
    expected = upnpc_list(lab)
    assert len(expected) == 4 and agent_list(finding) == expected
    assert finding["status"] == "fail" and finding["severity"] == "critical"
    others = ev["mappings_to_other_hosts"]
    assert [(o["internal"], o["note"]) for o in others] == [("%s:8080" % CAM, "not this NAS's; never deleted")]


def test_mapping_exposes_the_nas_fix_closes_it_undo_restores_it(lab, tmp_path):
    lab.add_lan_host("cam", CAM)
    lab.start_http("cam", 8080, body="hello from cam")
    wan_url = "http://%s:8080/" % Lab.ROUTER_WAN
    cam_url = "http://%s:9080/" % Lab.ROUTER_WAN
    assert lab.http_get("wan", wan_url) is None  # nothing forwarded yet
    add(lab, "nas", Lab.NAS, 8080, 8080, desc="nas admin")
    add(lab, "cam", CAM, 9080, 8080, desc="camera")
    assert lab.http_get("wan", wan_url) == "hello from nas"  # the internet reaches the NAS's admin port
    root, settings = fake_nas(tmp_path, fix_scope="all")

    finding = check(lab, root, settings)
    assert finding["status"] == "fail" and finding["severity"] == "critical"
    assert "TCP 8080 → 10.77.0.10:8080 'nas admin'" in finding["summary"]

    fixed = agent(lab, root, settings, "fix", "--only", "router.upnp-mappings", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "applied chg-" in fixed.stdout and "igd" in fixed.stdout.lower()
    assert lab.http_get("wan", wan_url) is None  # closed
    assert check(lab, root, settings)["status"] == "pass"
    # the other host's mapping was never touched, even with fix_scope = all
    assert lab.http_get("wan", cam_url) == "hello from cam"
    assert ("TCP", 9080, CAM, 8080, "camera") in upnpc_list(lab)
    assert not any(m[2] == Lab.NAS for m in upnpc_list(lab))

    undone = agent(lab, root, settings, "undo", "--last")
    assert undone.returncode == 0 and "re-added mapping TCP 8080 → 10.77.0.10:8080" in undone.stdout, undone.stdout
    assert lab.http_get("wan", wan_url) == "hello from nas"  # reachable again
    assert ("TCP", 8080, Lab.NAS, 8080, "nas admin") in upnpc_list(lab)
    assert check(lab, root, settings)["status"] == "fail"


def test_fix_scope_management_keeps_other_nas_mappings(lab, tmp_path):
    add(lab, "nas", Lab.NAS, 8080, 8080, desc="nas admin")
    add(lab, "nas", Lab.NAS, 6881, 6881, "UDP", desc="bt")
    root, settings = fake_nas(tmp_path, igd_url=lab.igd_location)  # --igd path: no discovery
    fixed = agent(lab, root, settings, "fix", "--only", "router.upnp-mappings", "--yes")
    assert fixed.returncode == 1, fixed.stdout + fixed.stderr  # still failing: the high one stays
    assert upnpc_list(lab) == {("UDP", 6881, Lab.NAS, 6881, "bt")}
    finding = check(lab, root, settings)
    assert finding["status"] == "fail" and finding["severity"] == "high"
    assert finding["evidence"]["found_by"] == "igd_url"


def test_router_without_upnp_passes(make_lab, tmp_path):
    lab = make_lab(igd=False)
    root, settings = fake_nas(tmp_path, discovery_timeout="1")
    finding = check(lab, root, settings)
    assert finding["status"] == "pass" and "does not offer UPnP" in finding["summary"]
    assert finding["evidence"]["upnp_offered"] is False
    assert finding["evidence"]["discovery"]["interfaces"] == [Lab.NAS]


def test_turning_arc_off_also_removes_the_mappings_arc_made(lab, tmp_path):
    add(lab, "nas", Lab.NAS, 8080, 8080, desc="QNAP web")  # ARC's: port recorded in uLinux.conf
    add(lab, "nas", Lab.NAS, 18443, 443, desc="myQNAPcloud https")  # ARC's: description
    add(lab, "nas", Lab.NAS, 6881, 6881, "UDP", desc="bt")  # not ARC's
    root, settings = fake_nas(tmp_path)
    ulinux = root / "etc" / "config" / "uLinux.conf"
    ulinux.write_text(ini_text(merged(LAB_ULINUX, {"System": {"ExtPort": 8080}})))
    (root / "etc" / "config" / "upnpc.conf").write_text("[UPnP_Global]\nEnable = TRUE\n")
    fixed = agent(lab, root, settings, "fix", "--only", "myqnapcloud.upnp-forwarding", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert upnpc_list(lab) == {("UDP", 6881, Lab.NAS, 6881, "bt")}
    assert "Enable = FALSE" in (root / "etc" / "config" / "upnpc.conf").read_text()
    assert lab.http_get("wan", "http://%s:8080/" % Lab.ROUTER_WAN) is None
    undone = agent(lab, root, settings, "undo", "--last")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert {m[1] for m in upnpc_list(lab)} == {8080, 18443, 6881}
    assert lab.http_get("wan", "http://%s:8080/" % Lab.ROUTER_WAN) == "hello from nas"
