"""Reachability through real NAT: the real prober in ns wan (lab mode), the agent in ns nas behind a
router running real miniupnpd + nftables NAT. The prober only ever connects to the caller's address:
checked from its own connect log and from an nftables counter in ns wan."""

from __future__ import annotations

import json

from tests.support.netlab import Lab
from tests.support.reachlab import capture_counts, fake_nas, run_checks, start_capture, start_prober, verdicts

RESOLVE = "prober.lab=%s,%s" % (Lab.WAN_HOST, Lab.WAN_HOST6)


def only_caller(prober, *callers: str) -> None:
    targets = set(prober.connect_targets())
    assert targets and targets <= set(callers or (Lab.ROUTER_WAN,)), targets


def test_no_forwarding_passes(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    start_capture(lab)
    result = run_checks(lab, fake_nas(tmp_path, lab, prober.url))
    admin = result["reachability.admin"]
    assert admin["status"] == "pass", admin["summary"]
    assert {v["state"] for v in admin["evidence"]["ports"]} <= {"closed", "filtered"}
    assert admin["evidence"]["observed_addresses"] == {"ipv4": Lab.ROUTER_WAN}
    assert result["reachability.services"]["status"] == "pass"
    # the real miniupnpd listens on the LAN only: nothing UPnP answers from the WAN side
    assert result["router.upnp-wan-exposed"]["status"] == "pass", result["router.upnp-wan-exposed"]
    assert result["admin.default-cert"]["status"] == "pass"  # the lab's certificate is CN=NAS, not QNAP's
    assert result["router.external_ip"] == Lab.ROUTER_WAN
    only_caller(prober)
    counts = capture_counts(lab)
    assert counts["to_other"] == 0 and counts["to_caller"] > 0


def test_upnp_mapping_is_verified(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    lab.upnpc("nas", "-e", "lab-test", "-a", Lab.NAS, "8080", "8080", "TCP")
    result = run_checks(lab, fake_nas(tmp_path, lab, prober.url))
    admin = result["reachability.admin"]
    assert admin["status"] == "fail" and admin["severity"] == "critical", admin["summary"]
    verdict = verdicts(admin)["ipv4:8080"]
    assert verdict["state"] == "verified" and verdict["matched_by"] == "http"
    assert "UPnP mapping" in verdict["forwarded"] and "lab-test" in verdict["forwarded"]
    assert verdicts(admin)["ipv4:443"]["state"] == "closed"
    only_caller(prober)


def test_static_forward_is_verified_and_not_upnp(make_lab, tmp_path):
    lab = make_lab(cert_cn="QNAP NAS")
    prober = start_prober(lab)
    lab.add_forward(8080, Lab.NAS, 8080)
    lab.add_forward(443, Lab.NAS, 443)
    result = run_checks(lab, fake_nas(tmp_path, lab, prober.url))
    admin = result["reachability.admin"]
    assert admin["status"] == "fail" and admin["severity"] == "critical"
    found = verdicts(admin)
    assert found["ipv4:443"]["state"] == "verified" and found["ipv4:443"]["matched_by"] == "tls-certificate"
    assert found["ipv4:8080"]["state"] == "verified"
    assert "NOT a UPnP mapping" in found["ipv4:8080"]["forwarded"]
    assert "NOT a UPnP mapping" in admin["summary"]
    # the factory-named certificate, and the internet sees the same one
    cert = result["admin.default-cert"]
    assert cert["status"] == "fail" and cert["severity"] == "medium" and cert["evidence"]["seen_from_internet"]
    only_caller(prober)


def test_static_forward_through_the_cli_report(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    lab.add_forward(8080, Lab.NAS, 8080)
    nas = fake_nas(tmp_path, lab, prober.url)
    out = lab.python("nas", "exposure_guard", "check", "--root", str(nas["root"]), "--settings", str(nas["ini"]),
                     "--only", "router.upnp-mappings,reachability.admin", "--json", timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out.stdout)
    finding = next(f for f in report["findings"] if f["id"] == "reachability.admin")
    assert finding["status"] == "fail" and finding["severity"] == "critical"
    assert "NOT a UPnP mapping" in finding["summary"]
    assert report["summary"]["exposed"] is True


def test_router_own_web_server_is_open_unverified(make_lab, tmp_path):
    lab = make_lab()
    prober = start_prober(lab)
    lab.start_http("router", 8080, body="<html><title>Router admin</title></html>", bind=Lab.ROUTER_WAN)
    result = run_checks(lab, fake_nas(tmp_path, lab, prober.url))
    admin = result["reachability.admin"]
    assert admin["status"] == "fail" and admin["severity"] == "high", admin["summary"]
    verdict = verdicts(admin)["ipv4:8080"]
    assert verdict["state"] == "open-unverified"
    assert verdict["remote"]["http"]["title"] == "Router admin"
    assert "something else answers" in admin["summary"]


def test_ipv6_global_address_reachable_from_wan(make_lab, tmp_path):
    lab = make_lab(ipv6=True)
    prober = start_prober(lab, ipv6=True)
    start_capture(lab)
    nas = fake_nas(tmp_path, lab, "http://prober.lab:%d" % prober.port, ipv6=True)
    result = run_checks(lab, nas, resolve=RESOLVE)
    admin = result["reachability.admin"]
    assert admin["status"] == "fail" and admin["severity"] == "critical", admin["summary"]
    assert admin["evidence"]["observed_addresses"] == {"ipv4": Lab.ROUTER_WAN, "ipv6": Lab.NAS6}
    found = verdicts(admin)
    assert found["ipv6:8080"]["state"] == "verified" and found["ipv6:443"]["state"] == "verified"
    assert "IPv6" in found["ipv6:8080"]["forwarded"]
    assert found["ipv4:8080"]["state"] == "closed"  # IPv4 is behind NAT without forwards
    only_caller(prober, Lab.ROUTER_WAN, Lab.NAS6)
    assert capture_counts(lab)["to_other"] == 0


def test_ipv6_behind_a_firewall_passes(make_lab, tmp_path):
    lab = make_lab(ipv6=True, ipv6_open=False)
    prober = start_prober(lab, ipv6=True)
    nas = fake_nas(tmp_path, lab, "http://prober.lab:%d" % prober.port, ipv6=True)
    admin = run_checks(lab, nas, resolve=RESOLVE)["reachability.admin"]
    assert admin["status"] == "pass", admin["summary"]
    assert verdicts(admin)["ipv6:8080"]["state"] == "filtered"


ABUSE = r'''
import json, sys, requests
url = sys.argv[1]
def post(body, headers=None):
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    r = requests.post(url + "/v1/probe", data=json.dumps(body), headers=h, timeout=20)
    return {"status": r.status_code, "body": r.json()}
out = {
  "target": post({"nonce": "abusetest-1", "ports": [9999, 8080], "target": "198.51.100.10", "host": "198.51.100.10"}),
  "xff": post({"nonce": "abusetest-2", "ports": [9999]}, {"X-Forwarded-For": "198.51.100.10"}),
  "ports": post({"nonce": "abusetest-3", "ports": list(range(9000, 9017))}),
  "flood": [post({"nonce": "abusetest-4", "ports": [9999]})["status"] for _ in range(3)],
}
print(json.dumps(out))
'''


def test_abuse_is_refused_and_only_the_caller_is_probed(make_lab, tmp_path):
    lab = make_lab()
    # a decoy in ns wan: the address an abuser would like the prober to attack
    lab.start_http("wan", 9999, body="decoy", bind=Lab.WAN_HOST)
    prober = start_prober(lab, "--rate", "3", "--burst", "4")
    start_capture(lab)
    result = lab.python("nas", ABUSE, prober.url, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    assert out["target"]["status"] == 200
    assert out["target"]["body"]["observed_address"] == Lab.ROUTER_WAN
    assert out["target"]["body"]["ignored_fields"] == ["host", "target"]
    assert {p["state"] for p in out["target"]["body"]["ports"]} == {"closed"}
    assert out["xff"]["status"] == 200 and out["xff"]["body"]["observed_address"] == Lab.ROUTER_WAN
    assert out["ports"]["status"] == 400 and out["ports"]["body"]["error"]["code"] == "too_many_ports"
    assert out["flood"] == [200, 429, 429]  # burst 4: target, xff and too-many-ports spent three
    only_caller(prober)
    assert capture_counts(lab)["to_other"] == 0
    requests_log = prober.requests_logged(6)
    assert [r["status"] for r in requests_log] == [200, 200, 400, 200, 429, 429]
    assert requests_log[1]["xff_ignored"] is True

    # outside lab mode the same prober refuses the (documentation-range) caller outright
    strict = start_prober(lab, port=8444, lab_mode=False, name="strict")
    refused = lab.python("nas", "import requests,sys; r = requests.post(sys.argv[1] + '/v1/probe', "
                                "json={'nonce': 'strict-000', 'ports': [8080]}, timeout=10); "
                                "print(r.status_code, r.json()['error']['code'])", strict.url, timeout=60)
    assert refused.stdout.split() == ["403", "target_refused"], refused.stderr
    assert strict.connect_targets() == []


def test_double_nat_is_unknown_never_pass(make_lab, tmp_path):
    # Another NAT router in front of the one with UPnP: the router's WAN address is private, so its miniupnpd
    # (no STUN) reports no external address, and the prober sees the outer router's address.
    lab = make_lab(double_nat=True, stun=False)
    prober = start_prober(lab)
    lab.add_forward(8080, Lab.NAS, 8080)  # forwarded by the inner router only: the outer one stops it
    result = run_checks(lab, fake_nas(tmp_path, lab, prober.url))
    admin = result["reachability.admin"]
    assert admin["status"] == "unknown", admin["summary"]
    assert "reports no external address" in admin["summary"] and "may not mean" in admin["summary"]
    assert {v["state"] for v in admin["evidence"]["ports"]} <= {"closed", "filtered"}
    assert admin["evidence"]["observed_addresses"] == {"ipv4": Lab.ROUTER_WAN}
    assert result["router.external_ip"] is None
    assert result["reachability.services"]["status"] == "unknown"
    only_caller(prober)
