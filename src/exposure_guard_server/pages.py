"""Server-rendered HTML: the Jinja environment (``templates/``) and the one function routes render with."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from exposure_guard import __version__
from exposure_guard_server.reportlogic import KIND_LABEL, STATES, VERDICT_LABEL, format_time

HERE = Path(__file__).parent


def _ago(value: Any) -> str:
    if value in (None, ""):
        return "never"
    seconds = max(0, int(time.time() - float(value)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s ago" % (seconds // size, unit)
    return "%ds ago" % seconds


def _duration(value: Any) -> str:
    """A length of time in its largest unit, rounded: 7190 → "2 h"."""
    seconds = abs(float(value or 0))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return "%d %s" % (round(seconds / size), unit)
    return "%d s" % round(seconds)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.do"])
    env.filters["ago"] = _ago
    env.filters["duration"] = _duration
    env.filters["ts"] = format_time
    env.filters["q"] = lambda value: quote(str(value), safe="")
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    env.filters["label"] = lambda value: VERDICT_LABEL.get(value, "STALE" if value == "stale" else str(value))
    # An evidence object's items by key, those about other hosts ("mappings_to_other_hosts") last.
    env.filters["others_last"] = lambda value: sorted(value.items(), key=lambda kv: ("other" in str(kv[0]), str(kv[0])))
    env.filters["kind"] = lambda value: KIND_LABEL.get(value, str(value).replace("_", " "))
    env.globals["version"] = __version__
    env.globals["states"] = STATES
    return env


TEMPLATES = _environment()


def render(request: Request, name: str, context: Dict[str, Any], status: int = 200) -> HTMLResponse:
    """``templates/name`` with the logged-in user (if any), the CSRF token for its forms and ``context``."""
    session = request.scope.get("eg_session_row")
    caller = request.scope.get("eg_caller")
    base = {"request_path": request.url.path, "user": session["username"] if session else None,
            "csrf": session["csrf_token"] if session else "", "now": time.time(),
            "role": caller.role if caller is not None else "", "limited": bool(caller and caller.groups is not None)}
    base.update(context)
    return HTMLResponse(TEMPLATES.get_template(name).render(**base), status_code=status)
