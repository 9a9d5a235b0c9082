"""Natural order for host names: ``NAS2`` before ``NAS10``, case ignored.

The key is stored beside the name (``devices.hostname_key``) so the database sorts and pages by it with an
index: each run of digits becomes its length (two digits) followed by the digits without leading zeros, so a
shorter number sorts first and equal lengths compare digit by digit."""

from __future__ import annotations

import re

DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: other scripts' digits sort as letters
MAX_KEY = 1024


def hostname_key(name: str) -> str:
    def number(match: re.Match[str]) -> str:
        digits = match.group(0).lstrip("0") or "0"
        return "%02d%s" % (min(len(digits), 99), digits)

    return DIGITS.sub(number, name.casefold())[:MAX_KEY]
