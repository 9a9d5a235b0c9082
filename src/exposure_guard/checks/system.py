"""``system.*``: how the NAS starts — user code that runs at boot."""

from __future__ import annotations

from typing import Any, Dict

from exposure_guard.checks.references import QSNATCH
from exposure_guard.checks.registry import Outcome, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.contracts import sha256_hex
from exposure_guard.facts import inputs
from exposure_guard.facts.firmware import parse_release

AUTORUN_SCRIPT = "tmp/config/autorun.sh"  # the boot flash's config partition, mounted on demand
SCRIPT_CAP = 1024 * 1024
SWITCH_SINCE = (4, 3, 0)  # [Misc] Autorun exists from QTS 4.3.0 on


@check(
    "system.autorun",
    title="A user autorun.sh runs at boot",
    severity="medium",
    family="local",
    rationale="""
With [Misc] Autorun on, QTS runs autorun.sh from the boot flash at every start. QSnatch used exactly
this to survive firmware updates and malware scans; a script you did not write there is a red flag.""",
    remediation="""
Control Panel > Hardware > General: untick "Run user defined processes during startup" unless you put
the script there yourself, and read its contents. If you did not write it, follow QNAP's QSnatch
advisory (update, Malware Remover, change passwords).""",
    reads=(inputs.AUTORUN, "/tmp/config/autorun.sh (size and SHA-256 only)",
           "the firmware release: below QTS 4.3.0 there is no switch and autorun.sh runs whenever it exists"),
    references=(QSNATCH,),
)
def autorun(ctx: CheckContext) -> Outcome:
    enable = ctx.read(inputs.AUTORUN)
    script = ctx.root.path(AUTORUN_SCRIPT)
    info: Dict[str, Any] = {"path": "/" + AUTORUN_SCRIPT, "present": script.is_file()}
    if script.is_file():
        try:
            data = script.read_bytes()[:SCRIPT_CAP]
            info.update(size=script.stat().st_size, sha256=sha256_hex(data))
        except OSError as exc:
            info["error"] = exc.strerror
    evidence: Dict[str, Any] = {"autorun": enable.evidence(), "script": info}
    if enable.value is None:
        # Before QTS 4.3.0 the switch does not exist: autorun.sh runs whenever it is there.
        release = parse_release(ctx.identity.firmware)
        evidence["firmware"] = ctx.identity.firmware
        if release is None or (release.product == "QTS" and release.parts < SWITCH_SINCE):
            why = ("firmware %s has no autorun switch (it came with QTS 4.3.0)" % ctx.identity.firmware
                   if release else "the firmware release is unknown, so whether QTS has the switch is unknown")
            if info["present"]:
                return failed("autorun.sh runs at every boot: %s" % why, evidence)
            return unknown("%s, and autorun.sh could not be inspected (the flash config partition is not "
                           "mounted)" % why, evidence)
    if enable.as_bool():
        return failed("QTS runs a user autorun.sh at boot%s" % ("" if info["present"] else
                      " (the flash config partition is not mounted, so the script could not be inspected)"),
                      evidence)
    return passed("user autorun at boot is off", evidence)
