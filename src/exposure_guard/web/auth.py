"""Who may use the page: a logged-in QTS administrator, as QTS itself says.

The session comes from QTS's own cookies (``NAS_SID``, or ``NAS_USER`` + ``qtoken``) and is checked against
QTS's ``authLogin.cgi`` on loopback at the admin port from the NAS's own config — never at a host taken
from the request (deriving it from the Host header lets a forged header point the check at a server that
says yes). ``authPassed`` and ``isAdmin`` must both be 1, and the user QTS names must be the ``NAS_USER``
cookie when one is sent. Anything else is 401 (not logged in), 403 (not an administrator) or 503 (QTS's
login service did not answer): never data. There is no password store of our own.
"""

from __future__ import annotations

import re
from http.cookies import CookieError, SimpleCookie
from typing import Dict, Optional
from urllib.parse import urlencode, urlsplit

from exposure_guard.errors import PeerError
from exposure_guard.qts.config import QtsConfig, parse_bool

AUTH_PATH = "/cgi-bin/authLogin.cgi"
_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{1,256}$")  # QTS session ids and tokens: short, URL-safe
_USER = re.compile(r"^[^\x00-\x1f\x7f<>&\"';]{1,64}$")
AUTH_DEADLINE = 5.0


class AuthError(Exception):
    """Not allowed: ``status`` is 401, 403 or 503; the message says why (for the log, not the visitor)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Admin:
    """A QTS administrator's session, as QTS confirmed it."""

    def __init__(self, user: str, session: str) -> None:
        self.user = user
        self.session = session  # the sid or qtoken: the CSRF token is bound to it


def session_cookies(header: Optional[str]) -> Dict[str, str]:
    """The QTS cookies of a Cookie header; malformed headers and values that are not plain tokens count as
    absent."""
    if not header or len(header) > 8192:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    out = {}
    for name in ("NAS_SID", "NAS_USER", "qtoken"):
        if name in jar:
            value = jar[name].value
            pattern = _USER if name == "NAS_USER" else _TOKEN
            if pattern.match(value):
                out[name] = value
    return out


def _port(config: QtsConfig, section: str, key: str, default: int) -> int:
    raw = (config.getcfg(section, key) or "").strip()
    return int(raw) if raw.isdigit() and 0 < int(raw) < 65536 else default


def loopback_auth_url(config: QtsConfig) -> str:
    """authLogin.cgi on loopback at the NAS's admin port: [System] Web Access Port (default 8080), or the HTTPS
    port [Stunnel] Port (default 443) when the admin UI is HTTPS-only ([System] Force SSL)."""
    if parse_bool(config.getcfg("System", "Force SSL")) and parse_bool(config.getcfg("Stunnel", "Enable")) is not False:
        return "https://127.0.0.1:%d%s" % (_port(config, "Stunnel", "Port", 443), AUTH_PATH)
    return "http://127.0.0.1:%d%s" % (_port(config, "System", "Web Access Port", 8080), AUTH_PATH)


def _loopback_redirect(answer_headers: Dict[str, str]) -> Optional[str]:
    """Where an admin port that only does HTTPS sends us: kept only when it is authLogin.cgi on loopback."""
    location = next((v for k, v in answer_headers.items() if k.lower() == "location"), "")
    parts = urlsplit(location)
    try:
        _check_loopback(location)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.path != AUTH_PATH:
        return None
    return "%s://127.0.0.1%s%s" % (parts.scheme, ":%d" % port if port else "", AUTH_PATH)


def is_loopback(host: str) -> bool:
    host = host.lower()
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise ValueError("the QTS login check must be on loopback, not %r" % host.lower())


class QtsAuth:
    """Checks a request's QTS session. ``url`` fixed (``--qts-auth``), or None: the loopback admin port read
    from the NAS's config at each check, so a changed admin port is followed without a restart."""

    def __init__(self, config: QtsConfig, url: Optional[str] = None, deadline: float = AUTH_DEADLINE) -> None:
        if url is not None:
            _check_loopback(url)
        self.config = config
        self.fixed_url = url
        self.deadline = deadline

    def url(self) -> str:
        if self.fixed_url is not None:
            return self.fixed_url
        self.config.invalidate("etc/config/uLinux.conf")
        return loopback_auth_url(self.config)

    def check(self, cookie_header: Optional[str]) -> Admin:
        from exposure_guard.hostilehttp import fetch  # requests loads only when a page is asked for
        from exposure_guard.upnp.xmlsafe import parse_xml, text_of

        cookies = session_cookies(cookie_header)
        if "qtoken" in cookies and "NAS_USER" in cookies:
            query = {"qtoken": cookies["qtoken"], "user": cookies["NAS_USER"]}
            session = cookies["qtoken"]
        elif "NAS_SID" in cookies:
            query = {"sid": cookies["NAS_SID"]}
            session = cookies["NAS_SID"]
        else:
            raise AuthError(401, "no QTS session cookie (log in to QTS first)")
        url = self.url()
        try:
            answer = fetch(url + "?" + urlencode(query), deadline=self.deadline, max_bytes=64 * 1024)
            if answer.status in (301, 302, 303, 307, 308):  # HTTP admin port of an HTTPS-only admin UI
                moved = _loopback_redirect(answer.headers)
                if moved is None:
                    raise AuthError(503, "QTS's login service at %s redirected off loopback; refused" % url)
                url = moved
                answer = fetch(url + "?" + urlencode(query), deadline=self.deadline, max_bytes=64 * 1024)
            root = parse_xml(answer.body, "the answer of %s" % url)
        except (PeerError, ValueError) as exc:
            raise AuthError(503, "QTS's login service at %s did not answer usably: %s" % (url, exc)) from None
        if answer.status != 200:
            raise AuthError(503, "QTS's login service at %s answered HTTP %d" % (url, answer.status))
        if text_of(root, "authPassed") != "1":
            raise AuthError(401, "QTS does not know this session (logged out or expired)")
        user = text_of(root, "username") or text_of(root, "user")
        if "NAS_USER" in cookies and user != cookies["NAS_USER"]:
            raise AuthError(401, "QTS says this session belongs to %r, not to the NAS_USER cookie's user" % user)
        if text_of(root, "isAdmin") != "1":
            raise AuthError(403, "%r is not a QTS administrator" % user)
        return Admin(user or "admin", session)
