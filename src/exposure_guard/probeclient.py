"""Agent side of the reachability callback: ask the prober to connect back to us, and distrust the answer.

The prober's reply is untrusted input: the body is read with a size cap under a total deadline, and
checked against the v1 contract (``data/prober-v1.schema.json``, compiled by the same schema compiler the
server uses for reports: the agent cannot ship ``jsonschema``, the tests hold both to the same verdicts)
and against the request it answers (nonce, address family, the ports asked).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

from exposure_guard import __version__, hostilehttp
from exposure_guard.contracts import PROBER_SCHEMA_FILE as SCHEMA_FILE
from exposure_guard.contracts import PROBER_SCHEMA_ID as API_SCHEMA
from exposure_guard.contracts.fingerprint import clean_text
from exposure_guard.contracts.schemacheck import compile_explaining
from exposure_guard.errors import ConnectFailed, PeerError, TlsFailed, TooLarge, TooSlow

RESPONSE_CAP = 256 * 1024
MAX_PORTS = 16
# Requests per address family in one check: the prober's default burst per source is 4.
MAX_BATCHES = 4
STATES = ("open", "closed", "filtered")


class ProberError(Exception):
    """The prober could not be asked or answered something unusable; the message is the reason."""


class ProberUnreachable(ProberError):
    """No connection to the prober over the requested address family."""


@dataclass(frozen=True)
class PortAsk:
    port: int
    tls: bool = False
    probe: str = "http"

    def to_dict(self) -> Dict[str, Any]:
        return {"port": self.port, "tls": self.tls, "probe": self.probe}


@dataclass(frozen=True)
class ProbeAnswer:
    observed_address: str
    family: str
    ports: Dict[int, Dict[str, Any]]
    upnp: Optional[Dict[str, Any]]
    duration_ms: int
    lab_mode: bool
    via_proxy: bool
    ignored_fields: List[str]


def new_nonce() -> str:
    return secrets.token_hex(16)


def ask(url: str, ports: Sequence[PortAsk], *, family: Optional[str] = None, token: str = "",
        timeout: float = 20.0, ca_file: str = "", upnp: bool = True, nonce: Optional[str] = None) -> ProbeAnswer:
    """POST /v1/probe over ``family`` ("ipv4", "ipv6" or None = whatever connects) and validate the answer.
    The exchange goes through the guarded HTTP transport: one total deadline, a size cap, no proxy from the
    environment (a proxy would make the prober probe the proxy, not this NAS)."""
    if not ports or len(ports) > MAX_PORTS:
        raise ValueError("between 1 and %d ports" % MAX_PORTS)
    nonce = nonce or new_nonce()
    body = {"nonce": nonce, "ports": [p.to_dict() for p in ports], "upnp": upnp}
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": "exposure-guard/%s" % __version__}
    if token:
        headers["Authorization"] = "Bearer " + token
    endpoint = url.rstrip("/") + "/v1/probe"
    with hostilehttp.new_session(family) as session:
        try:
            answer = hostilehttp.fetch(endpoint, method="POST", data=json.dumps(body).encode("utf-8"), headers=headers,
                                       deadline=timeout, max_bytes=RESPONSE_CAP, session=session,
                                       verify=ca_file or True, connect_timeout=min(10.0, timeout))
        except TlsFailed as exc:
            raise ProberError("TLS to the prober failed: %s" % clean_text(exc)) from None
        except ConnectFailed as exc:
            raise ProberUnreachable("cannot connect to the prober %s%s: %s" % (
                url, " over " + family if family else "", clean_text(exc, 160))) from None
        except TooLarge:
            raise ProberError("the prober's answer is larger than %d bytes" % RESPONSE_CAP) from None
        except TooSlow:
            raise ProberError("the prober did not answer within %.0f s" % timeout) from None
        except PeerError as exc:
            raise ProberError("asking the prober failed: %s" % clean_text(exc)) from None
    document = _decode(answer.body)
    if answer.status != 200:
        raise ProberError(_error_reason(answer.status, document))
    return validate_answer(document, nonce, [p.port for p in ports], family)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _error_reason(status: int, document: Any) -> str:
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        return "the prober refused (HTTP %d %s): %s" % (status, clean_text(error.get("code", ""), 40),
                                                        clean_text(error.get("message", ""), 200))
    return "the prober answered HTTP %d without a v1 error document" % status


# ---------------------------------------------------------------- validation
_CHECK: Optional[Callable[[Any], Optional[str]]] = None


def _schema_check() -> Callable[[Any], Optional[str]]:
    """The probe-answer part of prober-v1.schema.json, compiled once by the shared schema compiler (the
    agent cannot ship jsonschema; the tests hold both to the same verdicts)."""
    global _CHECK
    if _CHECK is None:
        schema = json.loads(SCHEMA_FILE.read_text("utf-8"))
        _CHECK = compile_explaining({"$defs": schema["$defs"], "$ref": "#/$defs/probe_response"})
    return _CHECK


def _fail(what: str) -> ProberError:
    return ProberError("the prober's answer does not follow %s: %s" % (API_SCHEMA, what))


def _text(value: Any, cap: int = 200) -> Optional[str]:
    return None if value is None else clean_text(value, cap)


def _port_result(item: Dict[str, Any]) -> Dict[str, Any]:
    """A schema-valid port result with every device-supplied text cleaned."""
    out: Dict[str, Any] = {"port": item["port"], "state": item["state"], "tls": None, "http": None,
                           "banner": _text(item.get("banner")), "error": _text(item.get("error"))}
    tls = item.get("tls")
    if tls is not None:
        out["tls"] = {"sha256": tls.get("sha256"), "error": _text(tls.get("error"))}
    http = item.get("http")
    if http is not None:
        out["http"] = {"status": http["status"]}
        for key in ("server", "location", "title"):
            out["http"][key] = _text(http[key])
    return out


def _upnp_result(value: Any) -> Optional[Dict[str, Any]]:
    """The WAN-side UPnP result, capped: at most 20 plain values per part, texts cleaned."""
    if value is None:
        return None
    out: Dict[str, Any] = {"exposed": value["exposed"], "error": _text(value.get("error"))}
    for part in ("ssdp", "igd"):
        kept: Dict[str, Any] = {}
        for key, item in (value.get(part) or {}).items():
            if len(kept) >= 20:
                break
            if isinstance(item, bool) or (isinstance(item, int) and 0 <= item < 65536):
                kept[clean_text(key, 40)] = item
            elif isinstance(item, str):
                kept[clean_text(key, 40)] = clean_text(item, 300)
        out[part] = kept or None
    return out


def validate_answer(document: Any, nonce: str, asked: Sequence[int], family: Optional[str] = None) -> ProbeAnswer:
    """Check an answer against the v1 contract and against this request; keep only the known, capped,
    cleaned fields."""
    if not isinstance(document, dict):
        raise _fail("not a JSON object")
    if document.get("schema") != API_SCHEMA:
        raise _fail("schema is %r" % clean_text(document.get("schema"), 60))
    problem = _schema_check()(document)
    if problem is not None:
        raise _fail(clean_text(problem, 300))
    if document["nonce"] != nonce:
        raise _fail("the nonce does not match this request (a replayed or misrouted answer)")
    try:
        address = ipaddress.ip_address(document["observed_address"])
    except ValueError:
        raise _fail("observed_address is not an IP address") from None
    seen_family = "ipv6" if address.version == 6 else "ipv4"
    if document["family"] != seen_family:
        raise _fail("family does not match observed_address")
    if family is not None and seen_family != family:
        raise _fail("asked over %s but the prober saw an %s address" % (family, seen_family))
    ports: Dict[int, Dict[str, Any]] = {}
    for item in document["ports"]:
        if item["port"] not in asked:
            raise _fail("result for port %d, which was not asked" % item["port"])
        ports[item["port"]] = _port_result(item)
    missing = [p for p in asked if p not in ports]
    if missing:
        raise _fail("no result for port(s) %s" % ", ".join(map(str, missing)))
    ignored = document.get("ignored_fields") or []
    return ProbeAnswer(str(address), seen_family, ports, _upnp_result(document.get("upnp")), document["duration_ms"],
                       document["lab_mode"], document["via_proxy"], [clean_text(i, 40) for i in ignored[:20]])
