"""The v1 API document: validating a probe request and shaping answers (schema: prober-v1.schema.json)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Tuple

from exposure_guard_prober import API_SCHEMA
from exposure_guard_prober.engine import PortRequest
from exposure_guard_prober.policy import PolicyError

KNOWN_FIELDS = ("nonce", "ports", "upnp")
MAX_NESTING = 8  # a request nests 3 deep; json.loads recurses once per level (2,000 levels: RecursionError)
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
PROBES = ("http", "banner")


def parse_probe_request(body: bytes, max_ports: int) -> Tuple[str, List[PortRequest], bool, List[str]]:
    """(nonce, ports, upnp, ignored field names). Unknown fields — a ``target``, ``host``, ``address`` —
    are ignored, never used: the prober probes only the caller. Everything else malformed is refused."""
    try:
        text = body.decode("utf-8")
        if _nesting_depth(text) > MAX_NESTING:
            raise PolicyError("bad_json", "the body nests deeper than %d levels" % MAX_NESTING)
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PolicyError("bad_json", "the body is not a JSON document") from None
    if not isinstance(document, dict):
        raise PolicyError("bad_request", "the body must be a JSON object")
    ignored = sorted(str(key)[:40] for key in document if key not in KNOWN_FIELDS)[:20]
    nonce = document.get("nonce")
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise PolicyError("bad_nonce", "nonce must be 8-64 characters of A-Z a-z 0-9 _ -")
    raw_ports = document.get("ports")
    if not isinstance(raw_ports, list) or not raw_ports:
        raise PolicyError("bad_ports", "ports must be a non-empty list")
    if len(raw_ports) > max_ports:
        raise PolicyError("too_many_ports", "at most %d ports per request (got %d)" % (max_ports, len(raw_ports)))
    ports: List[PortRequest] = []
    seen = set()
    for item in raw_ports:
        if isinstance(item, int) and not isinstance(item, bool):
            item = {"port": item}
        if not isinstance(item, dict):
            raise PolicyError("bad_ports", "each port is a number or an object {port, tls, probe}")
        port, tls, probe = item.get("port"), item.get("tls", False), item.get("probe", "http")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise PolicyError("bad_ports", "port must be a number from 1 to 65535")
        if not isinstance(tls, bool) or probe not in PROBES:
            raise PolicyError("bad_ports", "tls must be true/false and probe one of: %s" % ", ".join(PROBES))
        if port in seen:
            raise PolicyError("bad_ports", "port %d is listed twice" % port)
        seen.add(port)
        ports.append(PortRequest(port, tls, probe))
    upnp = document.get("upnp", False)
    if not isinstance(upnp, bool):
        raise PolicyError("bad_request", "upnp must be true or false")
    return nonce, ports, upnp, ignored


def _nesting_depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest outside JSON strings, in one linear pass (before json.loads recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def error_document(code: str, message: str, **extra: Any) -> Dict[str, Any]:
    document: Dict[str, Any] = {"schema": API_SCHEMA, "error": {"code": code, "message": message}}
    document["error"].update(extra)
    return document


def encode(document: Dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")
