"""CSRF tokens for the page's forms: an HMAC of the QTS session under a secret of this process.

A page from another site can make the administrator's browser send a POST with QTS's cookies, but it cannot
read our page, so it cannot know the token. Tokens stop working when the session changes or the service
restarts (the page is simply reloaded)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from exposure_guard.atomicio import read_bytes_nofollow, write_new_file

SECRET_FILE = "web-secret"


class CsrfTokens:
    def __init__(self, secret: bytes = b"") -> None:
        self._secret = secret or os.urandom(32)

    def token(self, session: str) -> str:
        return hmac.new(self._secret, b"csrf:" + session.encode("utf-8"), hashlib.sha256).hexdigest()[:40]

    def valid(self, session: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.token(session), token)


def stored_secret(state_dir: Path) -> bytes:
    """The secret kept in the (private) state dir, created once: CGI runs a process per request, and every
    one of them must accept the tokens the others put in the page."""
    path = Path(state_dir) / SECRET_FILE
    for _attempt in range(2):
        try:
            secret = read_bytes_nofollow(path)
            if len(secret) >= 32:
                return secret
            raise OSError("the CSRF secret %s is damaged; remove it" % path)
        except FileNotFoundError:
            try:
                write_new_file(path, os.urandom(32), mode=0o600)
            except FileExistsError:
                pass  # another request created it first: read theirs
    raise OSError("cannot create the CSRF secret %s" % path)
