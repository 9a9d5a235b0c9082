"""The page's HTML: verdict, findings by severity with their explanation and evidence, the fix plan, the
change history with Undo. Everything that comes from the NAS, a router or the journal is escaped; there is
no script at all, every change is a form POST carrying the CSRF token, and links are relative (the page is
served under whatever path QTS's web server gives it: every action is ``?a=<action>`` on the page's own URL,
which works for the CGI script and the loopback server alike)."""

from __future__ import annotations

import json
from html import escape
from typing import Any, Dict, List, Optional, Sequence

from exposure_guard.checks import get_check
from exposure_guard.contracts import SEVERITIES
from exposure_guard.report import Finding, Report

VERDICT_CLASS = {"EXPOSED": "exposed", "AT RISK": "risk", "OK": "ok"}
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
main{max-width:1100px;margin:0 auto;padding:12px}
h1{font-size:20px;margin:6px 0}h2{font-size:17px;margin:18px 0 6px}
.verdict{border-radius:8px;padding:12px 16px;color:#fff;display:flex;flex-wrap:wrap;gap:12px;align-items:center}
.verdict strong{font-size:22px}.exposed{background:#b3261e}.risk{background:#b05a00}.ok{background:#1e7d32}
.card{background:#fff;border-radius:8px;padding:10px 14px;margin:8px 0;box-shadow:0 1px 2px #0002}
.sev{display:inline-block;min-width:64px;font-weight:600;text-transform:uppercase;font-size:12px}
.critical{color:#b3261e}.high{color:#c2410c}.medium{color:#a16207}.low{color:#4b5563}.info{color:#4b5563}
details pre{white-space:pre-wrap;word-break:break-word;background:#f1f3f6;padding:8px;border-radius:6px;font-size:12px}
form{display:inline}
button{font:inherit;padding:5px 12px;border-radius:6px;border:1px solid #8a94a6;background:#fff;cursor:pointer}
button.primary{background:#1f4fd1;color:#fff;border-color:#1f4fd1}
table{border-collapse:collapse;width:100%}
td,th{padding:4px 6px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
.msg{background:#e8f0fe;border-left:4px solid #1f4fd1;padding:8px 12px;margin:8px 0}.err{background:#fdecea;border-color:#b3261e}
@media (max-width:600px){body{font-size:14px}td,th{display:block;border:0}tr{display:block;border-bottom:1px solid #e3e6eb}}
"""


def page(title: str, body: str) -> bytes:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<title>%s</title><link rel=\"stylesheet\" href=\"?a=style.css\"></head><body><main>%s</main></body></html>"
            % (escape(title), body)).encode("utf-8")


def form(action: str, csrf: str, label: str, fields: Optional[Dict[str, str]] = None, primary: bool = False) -> str:
    hidden = "".join('<input type="hidden" name="%s" value="%s">' % (escape(k), escape(v))
                     for k, v in (fields or {}).items())
    return ('<form method="post" action="?a=%s"><input type="hidden" name="csrf" value="%s">%s'
            '<button%s type="submit">%s</button></form>' % (escape(action), escape(csrf), hidden,
                                                            ' class="primary"' if primary else "", escape(label)))


def _device_line(device: Dict[str, Any]) -> str:
    parts = [str(device.get(k) or "") for k in ("hostname", "model", "firmware")]
    return " · ".join(escape(p) for p in parts if p)


def _finding(finding: Finding, csrf: str) -> str:
    check = get_check(finding.id)
    explain = ""
    if check is not None:
        explain = ("<p>%s</p><p><b>What to do:</b> %s</p>" % (escape(check.rationale), escape(check.remediation)))
    evidence = json.dumps(finding.evidence, indent=2, ensure_ascii=False, default=str)
    fix = ""
    if finding.fixable and finding.status == "fail":
        fix = " " + form("plan", csrf, "Fix…", {"check": finding.id})
    return ('<div class="card"><span class="sev %s">%s</span> <b>%s</b> <code>%s</code>%s<div>%s</div>'
            "<details><summary>Why, and how to fix it by hand</summary>%s<pre>%s</pre></details></div>"
            % (escape(finding.severity), escape(finding.severity if finding.status == "fail" else finding.status),
               escape(finding.title), escape(finding.id), fix, escape(finding.summary), explain, escape(evidence)))


def overview(report: Report, history: Sequence[Any], csrf: str, message: str = "", error: bool = False,
             settings_values: Optional[Dict[str, str]] = None, enrolled: str = "") -> bytes:
    verdict = report.verdict()
    counts = report.counts()
    out: List[str] = []
    out.append("<h1>ExposureGuard</h1>")
    if message:
        out.append('<div class="msg%s">%s</div>' % (" err" if error else "", escape(message)))
    out.append('<div class="verdict %s"><strong>%s</strong><span>%s</span><span>checked %s</span>%s%s</div>'
               % (VERDICT_CLASS[verdict], escape(verdict), _device_line(report.device),
                  escape(report.generated_at[:19].replace("T", " ") + " UTC"),
                  form("check", csrf, "Check now"),
                  (" " + form("plan", csrf, "Fix all safe…", {"check": "*"}, primary=True))
                  if any(f.fixable and f.status == "fail" for f in report.findings) else ""))
    out.append("<p>%d failing, %d passing, %d unknown, %d errors</p>" % (
        counts["fail"], counts["pass"], counts["unknown"], counts["error"]))
    failing = [f for f in report.findings if f.status == "fail"]
    for severity in SEVERITIES:
        group = [f for f in failing if f.severity == severity]
        if group:
            out.append("<h2>%s (%d)</h2>" % (escape(severity.capitalize()), len(group)))
            out.extend(_finding(f, csrf) for f in group)
    unsure = [f for f in report.findings if f.status in ("unknown", "error")]
    if unsure:
        out.append("<h2>Could not tell (%d)</h2>" % len(unsure))
        out.extend(_finding(f, csrf) for f in unsure)
    passing = [f for f in report.findings if f.status == "pass"]
    if passing:
        out.append("<details><summary>Passing (%d)</summary>%s</details>" % (
            len(passing), "".join(_finding(f, csrf) for f in passing)))
    out.append(router_section(report))
    out.append(internet_section(report))
    out.append(history_table(history, csrf))
    if settings_values is not None:
        out.append(settings_section(settings_values, enrolled, csrf))
    return page("ExposureGuard – %s" % verdict, "".join(out))


def settings_section(values: Dict[str, str], enrolled: str, csrf: str) -> str:
    from exposure_guard.web.settings_form import EDITABLE

    rows = []
    for section, key, label in EDITABLE:
        name = "%s.%s" % (section, key)
        value = values.get(name, "")
        if name == "agent.mode":
            field = '<select name="%s">%s</select>' % (name, "".join(
                '<option value="%s"%s>%s</option>' % (m, " selected" if m == value else "", m) for m in ("report", "fix")))
        else:
            field = '<input name="%s" value="%s" size="40">' % (escape(name), escape(value))
        rows.append("<tr><td><label>%s</label></td><td>%s</td></tr>" % (escape(label), field))
    return ('<h2>Settings</h2><form method="post" action="?a=settings"><input type="hidden" name="csrf" value="%s">'
            "<table>%s<tr><td>Fleet server</td><td>%s</td></tr></table><button type=\"submit\">Save</button> "
            "<small>The service uses new settings from its next check.</small></form>"
            % (escape(csrf), "".join(rows), escape(enrolled)))


def _by_id(report: Report, check_id: str) -> Optional[Finding]:
    return next((f for f in report.findings if f.id == check_id), None)


def router_section(report: Report) -> str:
    """The router's UPnP mappings to this NAS (from router.upnp-mappings), or why they are not known."""
    finding = _by_id(report, "router.upnp-mappings")
    if finding is None:
        return ""
    rows = finding.evidence.get("mappings_to_this_nas") if isinstance(finding.evidence, dict) else None
    if not isinstance(rows, list) or not rows:
        return "<h2>Router</h2><p>%s</p>" % escape(finding.summary)
    cells = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        cells.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>" % (
            escape(str(row.get("external", ""))), escape(str(row.get("internal", ""))),
            escape(str(row.get("description", ""))), "management port" if row.get("management_port") else "",
            "on" if row.get("enabled", True) else "off"))
    return ("<h2>Router: UPnP mappings to this NAS</h2><table><tr><th>router port</th><th>to</th><th>named</th>"
            "<th></th><th>enabled</th></tr>%s</table>" % "".join(cells))


def internet_section(report: Report) -> str:
    """What the callback prober saw from outside, port by port, with the router rule to remove."""
    findings = [f for f in (_by_id(report, "reachability.admin"), _by_id(report, "reachability.services")) if f]
    if not findings:
        return ""
    rows = []
    for finding in findings:
        ports = finding.evidence.get("ports") if isinstance(finding.evidence, dict) else None
        for verdict in ports if isinstance(ports, list) else []:
            if isinstance(verdict, dict):
                rows.append("<tr><td>%s</td><td>%s %s</td><td>%s</td><td>%s</td></tr>" % (
                    escape(str(verdict.get("service", ""))), escape(str(verdict.get("family", ""))),
                    escape(str(verdict.get("port", ""))), escape(str(verdict.get("state", ""))),
                    escape(str(verdict.get("forwarded", "")))))
    if not rows:
        return "<h2>From the internet</h2>%s" % "".join("<p>%s</p>" % escape(f.summary) for f in findings)
    return ("<h2>From the internet (callback)</h2><table><tr><th>service</th><th>port</th><th>seen</th>"
            "<th>how it gets in / what to remove</th></tr>%s</table>" % "".join(rows))


def history_table(history: Sequence[Any], csrf: str) -> str:
    if not history:
        return "<h2>Changes</h2><p>No change made yet.</p>"
    rows = []
    for record in reversed(list(history)[-100:]):
        undo = form("undo", csrf, "Undo", {"change": record.change_id}) if record.state in ("applied", "planned") else ""
        rows.append("<tr><td>%s</td><td>%s</td><td>%s</td><td>%s → %s</td><td>%s</td><td>%s</td></tr>" % (
            escape(record.at[:19]), escape(record.check_id), escape(record.target), escape(repr(record.before)),
            escape(repr(record.after)), escape(record.state), undo))
    return ("<h2>Changes</h2><table><tr><th>when</th><th>check</th><th>what</th><th>change</th><th>state</th>"
            "<th></th></tr>%s</table>" % "".join(rows))


def plan_page(items: Sequence[Any], check: str, csrf: str) -> bytes:
    if not items:
        body = "<h1>Nothing to fix</h1><p>No failing check has a safe automatic fix that is still needed.</p>"
        return page("ExposureGuard – nothing to fix", body + '<p><a href="?">Back</a></p>')
    lines = "".join("<li><code>%s</code> %s</li>" % (escape(i.action.check_id), escape(i.description)) for i in items)
    body = ("<h1>Apply %d change%s?</h1><ul>%s</ul><p>Every change is journaled and can be undone.</p>%s "
            '<a href="?">Cancel</a>' % (len(items), "" if len(items) == 1 else "s", lines,
                                         form("fix", csrf, "Apply", {"check": check}, primary=True)))
    return page("ExposureGuard – plan", body)


def refusal(status: int) -> bytes:
    text = {401: "Log in to QTS as an administrator, then open ExposureGuard from the QTS desktop or App Center.",
            403: "Only a QTS administrator may use ExposureGuard.",
            503: "QTS's login service did not answer; try again in a moment."}.get(status, "Not allowed.")
    return page("ExposureGuard", "<h1>ExposureGuard</h1><p>%s</p>" % escape(text))
