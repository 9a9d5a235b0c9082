"""FastAPI dependencies: the process's ``Server``, who is calling (a dashboard session, an API token) and
request bodies read with a cap (JSON, forms, CSRF-checked forms).

Dependencies that query the database are plain ``def`` (FastAPI runs them in its thread pool); those that
only look at the request, or read its body, are ``async def``."""

from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable, Dict, FrozenSet, MutableMapping, Optional, Tuple
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import decode_json, parse_int
from exposure_guard_server.roles import Caller
from exposure_guard_server.server import Server
from exposure_guard_server.services.events import MAX_EVENTS, EventFilter, parse_moment
from exposure_guard_server.services.fleet import MAX_PAGE, MAX_PER_PAGE, DeviceFilter, parse_bool

FORM_MAX_BODY = 64 * 1024
SESSION_COOKIES = ("__Host-eg_session", "eg_session")  # the first when the cookie is Secure (over HTTPS)


async def get_server(request: Request) -> Server:
    return request.app.state.server


# -- bodies --------------------------------------------------------------------------------------------

async def read_capped(receive: Callable[[], Awaitable[MutableMapping[str, Any]]], content_length: Optional[str],
                      cap: int) -> bytes:
    """The request body from the ASGI ``receive``: 413 past ``cap`` bytes (before reading anything when
    Content-Length says so), 400 for a Content-Length that is not a number, ``ClientDisconnect`` when the
    client goes away. The check-in fast path (asgi.py) uses it too."""
    if content_length is not None and parse_int(content_length.strip(), "Content-Length", default=0) > cap:
        raise ApiError(413, "body is larger than %d bytes" % cap)
    chunks = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "body is larger than %d bytes" % cap)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def json_body(cap: int, error: str, *, empty_is_object: bool = False) -> Callable[[Request], Awaitable[Any]]:
    """A dependency: the body parsed as JSON (400 ``error`` when it is not, or when a string in it is not
    valid Unicode); an empty body is ``{}`` when ``empty_is_object``."""

    async def body(request: Request) -> Any:
        raw = await read_capped(request.receive, request.headers.get("content-length"), cap)
        if not raw and empty_is_object:
            return {}
        return decode_json(raw, error)

    return body


async def form(request: Request) -> Dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (a repeated field's values joined with commas)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "forms must be application/x-www-form-urlencoded")
    raw = await read_capped(request.receive, request.headers.get("content-length"), FORM_MAX_BODY)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "malformed form") from None
    out: Dict[str, str] = {}
    for key, value in pairs:
        if "\x00" in key or "\x00" in value:
            raise ApiError(400, "a form field holds a NUL character")
        out[key] = value if key not in out else out[key] + "," + value
    return out


# -- who is calling ------------------------------------------------------------------------------------

def secure_cookies(request: Request, server: Server) -> bool:
    """Whether this server's cookies carry ``Secure`` on this request (``--cookie-secure``)."""
    mode = server.config.cookie_secure
    return mode == "always" or (mode == "auto" and request.url.scheme == "https")


def session_cookie_name(request: Request, server: Server) -> str:
    return SESSION_COOKIES[0] if secure_cookies(request, server) else SESSION_COOKIES[1]


def session_token(request: Request, server: Server) -> Optional[str]:
    """The session cookie under the one name this request's session is set with: over HTTPS only the
    ``__Host-`` one, which no other host and no plain-HTTP page can set; a plain ``eg_session`` beside it
    (planted by a sibling host or a man in the middle on http) does not count."""
    return request.cookies.get(session_cookie_name(request, server))


def current_session(request: Request, server: Server) -> Optional[Dict[str, Any]]:
    """The dashboard session of this request, if any (looked up once; pages show its user)."""
    if "eg_session_row" in request.scope:
        return request.scope["eg_session_row"]
    row = server.admin.session(session_token(request, server))
    request.scope["eg_session_row"] = row
    return row


def _bearer(request: Request) -> Optional[str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def identify(request: Request, server: Server = Depends(get_server)) -> Optional[Caller]:
    """Who is calling: an API token (``Authorization: Bearer``; a wrong one is a 401 at once), else the
    dashboard session, else None. Looked up once per request."""
    if "eg_caller" in request.scope:
        return request.scope["eg_caller"]
    token = _bearer(request)
    caller: Optional[Caller] = None
    if token is not None:
        caller = server.admin.api_tokens.caller(token)
        if caller is None:
            raise ApiError(401, "invalid or revoked API token", {"WWW-Authenticate": "Bearer"})
    else:
        row = current_session(request, server)
        if row is not None:
            caller = Caller("session", row["username"], row["role"], row["groups"], row["csrf_token"])
    request.scope["eg_caller"] = caller
    return caller


def need(role: str, *, api_write: bool = False) -> Callable[..., Caller]:
    """A dependency: the caller, who must have at least ``role`` (401 when nobody is logged in, 403 when the
    role is too low). ``api_write``: a dashboard session writing through the API must send its CSRF token
    in ``X-CSRF-Token`` (API tokens need none: a browser never sends them by itself)."""

    def check(request: Request, caller: Optional[Caller] = Depends(identify)) -> Caller:
        if caller is None:
            raise ApiError(401, "log in first, or send Authorization: Bearer <API token>",
                           {"WWW-Authenticate": "Bearer"})
        if not caller.allows(role):
            raise ApiError(403, "this needs the %s role; %s is %s" % (role, caller.name, caller.role))
        if api_write and caller.kind == "session" and not hmac.compare_digest(
                request.headers.get("x-csrf-token", ""), caller.csrf_token):
            raise ApiError(403, "missing or wrong X-CSRF-Token header")
        return caller

    check.role = role  # type: ignore[attr-defined]  # read by the route × role table test
    return check


VIEWER, OPERATOR, ADMIN = need("viewer"), need("operator"), need("admin")
OPERATOR_WRITE, ADMIN_WRITE = need("operator", api_write=True), need("admin", api_write=True)


def form_for(role: str) -> Callable[..., Awaitable[Tuple[Caller, Dict[str, str]]]]:
    """A dependency: (caller, fields) of a dashboard form sent by a logged-in user with at least ``role``,
    carrying the session's CSRF token in its ``csrf`` field."""
    checked = need(role)

    async def read(request: Request, caller: Caller = Depends(checked)) -> Tuple[Caller, Dict[str, str]]:
        fields = await form(request)
        if caller.kind != "session" or not hmac.compare_digest(fields.get("csrf", ""), caller.csrf_token):
            raise ApiError(403, "the form expired or did not come from this site (CSRF check failed); reload and retry")
        return caller, fields

    read.role = role  # type: ignore[attr-defined]
    return read


VIEWER_FORM, OPERATOR_FORM, ADMIN_FORM = form_for("viewer"), form_for("operator"), form_for("admin")


FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def metrics_access(request: Request, server: Server = Depends(get_server)) -> Optional[Caller]:
    """/metrics: like an API read. ``--public-metrics`` waives the token only for clients that connect
    directly: a request a proxy forwarded (any forwarding header) may come from anywhere the proxy serves,
    e.g. the internet behind a reverse proxy on the same host."""
    forwarded = any(name in request.headers for name in FORWARDING_HEADERS)
    caller = identify(request, server)
    if not server.config.public_metrics or forwarded:
        return need("viewer")(request, caller)
    return caller


# -- query parameters ----------------------------------------------------------------------------------

def _allowed(caller: Optional[Caller]) -> Optional[FrozenSet[int]]:
    """The groups whose boxes a caller may see (None: all). Nobody (the route refuses anyway) sees none."""
    return caller.groups if caller is not None else frozenset()


async def device_filter(request: Request, caller: Optional[Caller] = Depends(identify)) -> DeviceFilter:
    """The device list's filter, sort and page from the query string (400 for a bad value), limited to the
    caller's groups."""
    qp = request.query_params
    return DeviceFilter(
        allowed=_allowed(caller),
        state=qp.get("state", ""), exposed=parse_bool(qp.get("exposed"), "exposed"), check=qp.get("check", ""),
        stale=parse_bool(qp.get("stale"), "stale"), firmware=qp.get("firmware", ""), q=qp.get("q", ""),
        group=qp.get("group", ""), tag=qp.get("tag", "").strip(), retired=bool(parse_bool(qp.get("retired"), "retired")),
        secret=parse_int(qp.get("secret"), "secret", minimum=1) if qp.get("secret") else None,
        sort=qp.get("sort") or "risk", order=qp.get("order", ""),
        page=parse_int(qp.get("page"), "page", default=1, minimum=1, maximum=MAX_PAGE),
        per_page=parse_int(qp.get("per_page"), "per_page", default=50, minimum=1, maximum=MAX_PER_PAGE),
    ).validate()


async def event_filter(request: Request, caller: Optional[Caller] = Depends(identify)) -> EventFilter:
    """The event log's filter and page from the query string (400 for a bad value), limited to the caller's
    groups."""
    qp = request.query_params
    kinds = tuple(k.strip() for k in qp.get("kind", "").split(",") if k.strip())
    return EventFilter(
        allowed=_allowed(caller),
        since=parse_moment(qp.get("since", ""), "since"), until=parse_moment(qp.get("until", ""), "until",
                                                                             end_of_day=True),
        kinds=kinds, group=qp.get("group", ""), device=qp.get("device", "").strip(),
        before=parse_int(qp.get("before"), "before", minimum=1) if qp.get("before") else None,
        limit=parse_int(qp.get("limit"), "limit", default=100, minimum=1, maximum=MAX_EVENTS),
    ).validate()
