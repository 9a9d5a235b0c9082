"""The one strict parser for an HTTP/1.x request head (RFC 9110/9112) and its Content-Length.

Anything a lenient parser would repair is refused with a 400 instead: control characters (NUL, bare CR
or LF, DEL), whitespace before a colon, folded lines, a Content-Length that is not plain ASCII digits
(``int()`` would accept ``3_5``, ``+35``, ``٣٥`` and surrounding NBSP or vertical tab). The functions
are pure, so the fuzz tests call them directly."""

from __future__ import annotations

import re
from typing import Dict, Optional

MAX_FIELDS = 64
MAX_LENGTH_DIGITS = 10  # a longer number is far beyond any body cap; int() never sees it

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # origin-form: visible ASCII only
_VERSION = re.compile(rb"HTTP/1\.[01]")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")  # VCHAR, obs-text, SP, HTAB: no other CTL
_DIGITS = re.compile(rb"[0-9]+")
_SINGLE = ("content-length", "authorization", "x-forwarded-for", "host", "transfer-encoding", "content-type")


class HttpError(Exception):
    """The request cannot be served: ``status`` and the API error ``code`` for the answer."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class Request:
    def __init__(self, method: str, target: str, headers: Dict[str, str]) -> None:
        self.method, self.target, self.headers = method, target, headers
        self.path = target.split("?", 1)[0]


def _bad(message: str) -> HttpError:
    return HttpError(400, "bad_request", message)


def parse_head(head: bytes) -> Request:
    """A request head (request line and fields, with or without the final blank line) as a Request."""
    if head.endswith(b"\r\n\r\n"):
        head = head[:-4]
    lines = head.split(b"\r\n")
    if len(lines) > MAX_FIELDS + 1:
        raise HttpError(431, "header_too_large", "more than %d header fields" % MAX_FIELDS)
    parts = lines[0].split(b" ")
    if (len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1])
            or not _VERSION.fullmatch(parts[2])):
        raise _bad("malformed request line")
    headers: Dict[str, str] = {}
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):  # also refuses folded lines and space before the colon
            raise _bad("malformed header field")
        value = value.strip(b" \t")  # optional whitespace around a value is not part of it (RFC 9112 5)
        if not _FIELD_VALUE.fullmatch(value):
            raise _bad("control character in the %s header" % name.decode("ascii"))
        key = name.decode("ascii").lower()
        if key in headers and key in _SINGLE:
            raise _bad("duplicate %s header" % key)
        headers[key] = value.decode("latin-1")
    return Request(parts[0].decode("ascii"), parts[1].decode("ascii"), headers)


def body_length(request: Request, cap: int) -> int:
    """How many body bytes follow the head: the Content-Length (1*DIGIT, RFC 9110 8.6), at most ``cap``."""
    if "transfer-encoding" in request.headers:
        raise HttpError(501, "unsupported", "Transfer-Encoding is not supported; send Content-Length")
    text = request.headers.get("content-length")
    if text is None:
        return 0
    raw = text.encode("latin-1")
    if not _DIGITS.fullmatch(raw):
        raise _bad("Content-Length must be ASCII digits only")
    if len(raw.lstrip(b"0")) > MAX_LENGTH_DIGITS or int(raw) > cap:
        raise HttpError(413, "body_too_large", "body larger than %d bytes" % cap)
    return int(raw)
