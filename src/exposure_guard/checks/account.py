"""``account.*``: accounts brute-force bots try first."""

from __future__ import annotations

from exposure_guard.checks.references import DISABLE_ADMIN, QSNATCH
from exposure_guard.checks.registry import Outcome, check, failed, passed, unknown
from exposure_guard.context import CheckContext

SHADOW = "etc/shadow"
SHADOW_CAP = 4 * 1024 * 1024


@check(
    "account.default-admin",
    title="The built-in admin account is enabled",
    severity="medium",
    family="local",
    rationale="""
Every brute-force bot tries "admin" first. QNAP recommends creating another administrator and
disabling the built-in admin account.""",
    remediation="""
Create another account in the administrators group, sign in with it, then Control Panel > Privilege >
Users > admin > Edit Account Profile > "Disable this account". ExposureGuard never changes accounts.""",
    reads=("/etc/shadow: only whether the admin entry's password field is locked ('!' or '*'); the hash is never read out",),
    references=(DISABLE_ADMIN, QSNATCH),
    confirm="""
Where QTS stores "Disable this account" is not documented publicly; ExposureGuard reads whether the
admin entry in /etc/shadow is locked. Confirm by disabling the account in Control Panel and running the
check again.""",
)
def default_admin(ctx: CheckContext) -> Outcome:
    path = ctx.root.path(SHADOW)
    try:
        with path.open("rb") as handle:
            lines = handle.read(SHADOW_CAP).splitlines()
    except FileNotFoundError:
        return unknown("/etc/shadow does not exist", {"file": "/etc/shadow"})
    except OSError as exc:
        return unknown("/etc/shadow cannot be read: %s (run as root)" % exc.strerror, {"file": "/etc/shadow"})
    for line in lines:
        fields = line.split(b":")
        if fields[0] == b"admin":
            secret = fields[1] if len(fields) > 1 else b""
            locked = secret.startswith((b"!", b"*"))
            # Only facts about the field leave this function, never the field.
            evidence = {"file": "/etc/shadow", "account": "admin", "locked": locked, "key_confidence": "likely"}
            if locked:
                return passed("the built-in admin account is disabled", evidence)
            if not secret:
                evidence["empty_password"] = True
                return failed("the built-in admin account is enabled with an empty password field (no password)",
                              evidence, severity="critical")
            return failed("the built-in admin account is enabled", evidence)
    return passed("there is no account named admin", {"file": "/etc/shadow", "account": "admin"})
