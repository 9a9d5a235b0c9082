"""What a webhook receives, per its format: ``json`` (our own document, signed), ``slack`` (an incoming
webhook message), ``teams`` (an Adaptive Card, as Teams workflow webhooks take it) or ``ntfy`` (ntfy's JSON
publish: posted to the server's root with the topic from the URL's last path segment).

Every format carries the box, its group, what happened, and a link to the box's page when the server knows
its own public address (Admin page → Settings)."""

from __future__ import annotations

import json
from typing import Any, Dict, Tuple
from urllib.parse import quote

from exposure_guard_server.reportlogic import KIND_LABEL

FORMATS = ("json", "slack", "teams", "ntfy")
NTFY_PRIORITY = {"became_exposed": 5, "re_enroll_pending": 4, "went_stale": 3, "test": 3}
NTFY_TAGS = {"became_exposed": ["rotating_light"], "fixed": ["white_check_mark"], "no_longer_exposed": ["warning"],
             "became_at_risk": ["warning"], "went_stale": ["zzz"], "test": ["test_tube"]}


def device_link(public_url: str, device_id: str) -> str:
    return "%s/devices/%s" % (public_url.rstrip("/"), quote(device_id, safe="")) if public_url else ""


def headline(doc: Dict[str, Any]) -> str:
    """One line: "reception-nas (Acme Dental) became exposed: router.upnp-mappings"."""
    device = doc["device"]
    detail = doc.get("detail") or {}
    who = device.get("hostname") or device.get("device_id", "?")
    if device.get("group"):
        who += " (%s)" % device["group"]
    what = KIND_LABEL.get(doc["event"], "test delivery" if doc["event"] == "test" else doc["event"].replace("_", " "))
    line = "%s %s" % (who, what)
    if detail.get("newly_failing"):
        line += ": now failing %s" % ", ".join(detail["newly_failing"][:5])
    elif detail.get("no_longer_failing"):
        line += ": no longer failing %s" % ", ".join(detail["no_longer_failing"][:5])
    return line


def _escape_slack(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render(fmt: str, doc: Dict[str, Any]) -> str:
    """The body for a webhook in format ``fmt`` from our JSON document ``doc`` (built by transitions.py)."""
    if fmt == "json":
        return json.dumps(doc, sort_keys=True)
    text = headline(doc)
    link = doc.get("dashboard_url", "")
    if fmt == "slack":
        shown = _escape_slack(text)
        if link:
            shown += " <%s|open in ExposureGuard>" % link
        return json.dumps({"text": shown, "unfurl_links": False})
    if fmt == "teams":
        body = [{"type": "TextBlock", "text": text, "wrap": True, "weight": "Bolder"},
                {"type": "FactSet", "facts": [{"title": "Verdict", "value": str(doc["device"].get("verdict", ""))},
                                              {"title": "When", "value": doc.get("at", "")}]}]
        card: Dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                                "version": "1.4", "body": body}
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in ExposureGuard", "url": link}]
        return json.dumps({"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]})
    if fmt == "ntfy":
        message: Dict[str, Any] = {"title": "ExposureGuard: " + KIND_LABEL.get(doc["event"], doc["event"]),
                                   "message": text, "priority": NTFY_PRIORITY.get(doc["event"], 3),
                                   "tags": NTFY_TAGS.get(doc["event"], [])}
        if link:
            message["click"] = link
        return json.dumps(message)
    raise ValueError("unknown webhook format %r" % fmt)


def ntfy_target(url: str, body: str) -> Tuple[str, str]:
    """ntfy's JSON publish goes to the server's root with the topic in the body: (root URL, body)."""
    base, _, topic = url.partition("?")[0].rstrip("/").rpartition("/")
    message = json.loads(body)
    message["topic"] = topic
    return base + "/", json.dumps(message)
