"""The agent's reachability checks against the real prober (lab mode on loopback): real services,
real fingerprints on both sides, real token check, real WAN-side UPnP test against an IGD stand-in."""

from __future__ import annotations

from exposure_guard.checks import admin as admin_checks
from exposure_guard.checks import reachability, router
from exposure_guard.context import CheckContext
from exposure_guard.qts.root import QtsRoot
from exposure_guard.settings import load_settings
from tests.support.fakeigd import FakeIgd, FakeSsdp
from tests.support.reach import nas_tree, router_facts


def context(tmp_path, services, url, token=""):
    settings = load_settings(None, environ={}).with_overrides({
        ("reachability", "prober_url"): url, ("reachability", "token"): token, ("reachability", "timeout"): "10",
        ("reachability", "local_probe"): "yes"})  # the test tree is this machine's own services
    ctx = CheckContext(QtsRoot(nas_tree(tmp_path / "root", services)), settings)
    ctx.provide_router(router_facts([]))  # the router audit ran and found no mapping
    return ctx


def test_everything_verified_through_the_real_prober(start_prober, services, tmp_path):
    prober = start_prober(tokens=("e2e-token",))
    ctx = context(tmp_path, services, prober.url(), token="e2e-token")
    admin = reachability.reachability_admin(ctx)
    assert admin.status == "fail" and admin.severity == "critical", admin.summary
    states = {v["port"]: (v["state"], v.get("matched_by")) for v in admin.evidence["ports"]}
    assert states[services.https_port] == ("verified", "tls-certificate")
    assert states[services.http_port] == ("verified", "http")
    services_outcome = reachability.reachability_services(ctx)
    states = {v["port"]: (v["state"], v.get("matched_by")) for v in services_outcome.evidence["ports"]}
    assert states[services.ssh_port] == ("verified", "banner")
    assert states[services.closed] == ("closed", None)
    assert router.upnp_wan_exposed(ctx).status == "pass"
    cert = admin_checks.default_cert(ctx)
    assert cert.status == "fail" and cert.evidence["seen_from_internet"]
    # one callback for all four checks, to the caller only
    assert len(prober.requests_logged(1)) == 1
    assert {c["target"] for c in prober.connects()} == {"127.0.0.1"}


def test_wrong_token_is_unknown_not_a_crash(start_prober, services, tmp_path):
    prober = start_prober(tokens=("right",))
    ctx = context(tmp_path, services, prober.url(), token="wrong")
    outcome = reachability.reachability_admin(ctx)
    assert outcome.status == "unknown" and "unauthorized" in outcome.summary
    assert prober.connects() == []


def test_prober_outside_lab_mode_refuses_and_the_agent_says_why(start_prober, services, tmp_path):
    prober = start_prober(lab_allow=())
    outcome = reachability.reachability_admin(context(tmp_path, services, prober.url()))
    assert outcome.status == "unknown" and "target_refused" in outcome.summary


def test_router_answering_upnp_from_outside(start_prober, services, tmp_path):
    with FakeIgd("igd2") as igd, FakeSsdp(igd.location) as ssdp:
        prober = start_prober(ssdp_port=ssdp.address[1], ssdp_timeout=1.0)
        outcome = router.upnp_wan_exposed(context(tmp_path, services, prober.url()))
    assert outcome.status == "fail", outcome.summary
    assert "answers SSDP" in outcome.summary and "accepts UPnP control calls" in outcome.summary
