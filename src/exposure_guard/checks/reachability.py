"""Reachability checks via the callback prober. Placeholder until the prober lands: registered as skipped."""

from __future__ import annotations

from exposure_guard.checks.context import CheckContext
from exposure_guard.checks.registry import Outcome, check, skipped


@check(
    "reachability.admin",
    title="The NAS admin service is reachable from the internet",
    severity="critical",
    family="reachability",
    rationale="QNAP's Security Counselor: 'The System Administration service can be directly accessible from an "
              "external IP address'. Only a probe from outside can tell.",
    remediation="Remove the router port forward / UPnP mapping of the admin ports.",
    reads=("callback prober result for the admin ports",),
    exposure=True,
    network=True,
)
def reachability_admin(ctx: CheckContext) -> Outcome:
    return skipped("the callback prober is not implemented in this version")


@check(
    "reachability.services",
    title="Other NAS services are reachable from the internet",
    severity="high",
    family="reachability",
    rationale="SSH, FTP, SMB and web server ports reachable from the internet are brute-forced and exploited.",
    remediation="Remove the router port forwards of those services; use a VPN.",
    reads=("callback prober result for service ports",),
    exposure=True,
    network=True,
)
def reachability_services(ctx: CheckContext) -> Outcome:
    return skipped("the callback prober is not implemented in this version")


@check(
    "admin.default-cert",
    title="HTTPS admin serves the factory 'QNAP NAS' certificate",
    severity="low",
    family="reachability",
    rationale="The factory self-signed certificate is the same kind on every NAS and trains users to click through warnings.",
    remediation="Control Panel > Security > SSL Certificate: install a real certificate (e.g. Let's Encrypt).",
    reads=("TLS certificate served on the HTTPS admin port",),
    network=True,
)
def default_cert(ctx: CheckContext) -> Outcome:
    return skipped("certificate inspection is not implemented in this version")
