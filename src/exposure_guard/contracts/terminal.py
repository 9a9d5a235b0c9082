"""Text for a terminal from data someone else chose (a device on the LAN, a config file, a journal line, a
report): the one cleaner every renderer uses, so no such string can move the cursor, retitle the window,
reorder what is shown (bidi overrides) or hide text. Standard library only; the server may use it too."""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return "\\x%02x" % code
    return ("\\u%04x" % code) if code < 0x10000 else ("\\U%08x" % code)


def clean(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every character a terminal would act on shown as an escape: C0 and C1 controls, DEL,
    bidi overrides and isolates (U+202A–U+202E, U+2066–U+2069), zero-width and other non-printable
    characters become ``\\x1b``, ``\\u202e``…; tabs stay, newlines too when ``keep_newlines``."""
    value = str(text)
    if value.isprintable():
        return value
    keep = "\t\n" if keep_newlines else "\t"
    return "".join(char if char.isprintable() or char in keep else _escape(char) for char in value)


def json_for_terminal(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the characters ``clean`` escapes written
    as ``\\uXXXX``: the same document, safe to print. Raw, they can only stand inside JSON strings (json.dumps
    escapes C0 controls itself), where ``\\uXXXX`` means the same character."""
    if text.replace("\n", "").isprintable():
        return text
    return "".join(char if char.isprintable() or char == "\n" else _json_escape(char) for char in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return "\\u%04x" % code
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
