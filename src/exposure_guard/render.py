"""Human output: a verdict line, then one line per finding; colour only on a terminal."""

from __future__ import annotations

import os
import re
import sys
from typing import IO, Any, Dict, List, Optional

from exposure_guard.contracts.terminal import clean
from exposure_guard.report import SEVERITY_RANK, Report

_COLOURS = {"EXPOSED": "1;31", "AT RISK": "1;33", "OK": "1;32", "fail": "31", "pass": "32", "unknown": "33",
            "error": "35", "skipped": "2", "critical": "1;31", "high": "31", "medium": "33", "low": "36", "info": "2"}


def use_colour(stream: IO[str]) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR")


def paint(text: str, key: str, colour: bool) -> str:
    code = _COLOURS.get(key)
    return "\033[%sm%s\033[0m" % (code, text) if colour and code else text


_SHOWN_CHANGES = 50  # a fix of a rogue router's table can make thousands
_ORDER = {"fail": 0, "error": 1, "unknown": 2, "pass": 3, "skipped": 4}


_FAMILY = re.compile(r"^[A-Z]+-X\d", re.IGNORECASE)  # TS-X53B, TVS-X82: a model family, not a box's name


def model_label(device: Dict[str, Any]) -> str:
    """The name on the box when the NAS says it; else the model family, labelled as such when it is one."""
    model = clean(device.get("model", "?"))
    if device.get("model_family") in (None, "", device.get("model")) and _FAMILY.match(model):
        return "%s (model family)" % model
    return model


def firmware_label(device: Dict[str, Any]) -> str:
    """``QTS 5.0.1.2376 build 20230322`` (``QuTS hero h5.0.1.2376 …``)."""
    firmware = clean(device.get("firmware", "?"))
    product = "QuTS hero" if firmware.lower().startswith("h") else "QTS"
    return "%s %s%s" % (product, firmware, (" build %s" % clean(device["build"])) if device.get("build") else "")


def render_report(report: Report, stream: Optional[IO[str]] = None, verbose: bool = False) -> str:
    stream = stream or sys.stdout
    colour = use_colour(stream)
    device = report.device
    verdict = report.verdict()
    counts = report.counts()
    lines: List[str] = []
    lines.append("%s  %s (%s, %s)" % (paint(verdict, verdict, colour), clean(device.get("hostname", "?")),
                                      model_label(device), firmware_label(device)))
    lines.append("%d failing, %d passing, %d unknown, %d errors, %d skipped  (%d ms)" % (
        counts["fail"], counts["pass"], counts["unknown"], counts["error"], counts["skipped"], report.duration_ms))
    lines.append("")
    findings = sorted(report.findings, key=lambda f: (_ORDER.get(f.status, 9), -SEVERITY_RANK[f.severity], f.id))
    width = max([len(f.id) for f in findings] + [10])
    accepted = [f for f in findings if f.status == "fail" and f.accepted is not None]
    findings = [f for f in findings if f not in accepted]
    for finding in findings:
        if finding.status == "skipped" and not verbose:
            continue
        status = paint("%-7s" % finding.status.upper(), finding.status, colour)
        severity = paint("%-8s" % finding.severity, finding.severity, colour) if finding.status == "fail" else " " * 8
        fix = " [fixable]" if finding.fixable and finding.status == "fail" else ""
        lines.append("%s %s %-*s  %s%s" % (status, severity, width, finding.id, clean(finding.summary), fix))
    if accepted:
        lines.append("")
        lines.append("Accepted risks (failing, not counted in the verdict until the day shown):")
        for finding in accepted:
            info = finding.accepted or {}
            lines.append("%s %s %-*s  until %s: %s" % (
                paint("%-7s" % "ACCEPT", "unknown", colour), "%-8s" % finding.severity, width, finding.id,
                clean(info.get("until", "")), clean(info.get("reason", ""))))
    hidden = counts["skipped"] if not verbose else 0
    if hidden:
        lines.append(paint("(%d skipped checks hidden; --verbose shows them)" % hidden, "skipped", colour))
    if report.changes:
        lines.append("")
        lines.append("Changes applied:")
        for change in report.changes[:_SHOWN_CHANGES]:
            lines.append(clean("  %s  %s: %r -> %r" % (change["change_id"], change["target"], change["before"],
                                                       change["after"])))
        if len(report.changes) > _SHOWN_CHANGES:
            lines.append("  … and %d more (`exposure-guard history` lists every change)"
                         % (len(report.changes) - _SHOWN_CHANGES))
    if any(f.status == "fail" and f.fixable for f in report.findings):
        lines.append("")
        lines.append("Run `exposure-guard fix` to apply the safe fixes (each one can be undone).")
    return "\n".join(lines) + "\n"
