"""What every request value goes through before it is used: whole numbers from query strings, paths and
headers (ASCII digits only, bounded, so neither ``¹`` nor a 20-digit number reaches the database) and
strings from JSON bodies (no lone surrogates: they cannot be encoded as UTF-8 and would fail in the
database driver). Both raise ``ApiError(400)`` with the reason."""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from exposure_guard_server.errors import ApiError

MAX_ID = 2 ** 53  # any row id or count the API takes; far below SQLite's and PostgreSQL's 64-bit limits
_ASCII_DIGITS = re.compile(r"[0-9]{1,16}")
# JSON can only carry a surrogate as a \uD800-\uDFFF escape: scan the raw text for one before walking a
# document (the check-in's hot path pays one regular-expression scan).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def parse_int(text: Optional[str], name: str, *, default: Optional[int] = None, minimum: int = 0,
              maximum: int = MAX_ID) -> int:
    """``text`` as a whole number in ``minimum..maximum`` (``default`` when absent or empty)."""
    if text is None or text == "":
        if default is None:
            raise ApiError(400, "%s is required" % name)
        return default
    if not _ASCII_DIGITS.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise ApiError(400, "%s must be a whole number from %d to %d" % (name, minimum, maximum))
    return int(text)


def decode_json(raw: bytes, error: str) -> Any:
    """A JSON request body: 400 ``error`` when it is not UTF-8 JSON, 400 when a string in it is not valid
    Unicode."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, error) from None
    if has_surrogate_escape(raw):
        check_strings(document)
    return document


def has_surrogate_escape(raw: bytes) -> bool:
    return _SURROGATE_ESCAPE.search(raw) is not None


def check_strings(document: Any) -> None:
    """400 when any string (key or value) in a parsed JSON document holds a lone surrogate. Iterative: a
    document nested as deep as the JSON parser allows must not exhaust the stack here."""
    todo = [document]
    while todo:
        value = todo.pop()
        if isinstance(value, str):
            if not _encodable(value):
                raise ApiError(400, "body holds a string that is not valid Unicode (a lone surrogate "
                                    "\\uD800-\\uDFFF)")
        elif isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)


def check_text(value: str, name: str) -> str:
    """``value`` unless it holds a lone surrogate (400 naming ``name``)."""
    if not _encodable(value):
        raise ApiError(400, "%s is not valid Unicode" % name)
    return value


def printable(text: Any, limit: int) -> str:
    """``text`` as a string of at most ``limit`` characters without control characters (for free-form
    labels such as an agent's version, which are shown but never trusted)."""
    return CONTROL_CHARACTERS.sub("", str(text))[:limit]


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
