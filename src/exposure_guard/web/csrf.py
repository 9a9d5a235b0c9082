"""CSRF tokens for the page's forms: an HMAC of the QTS session under a secret of this process.

A page from another site can make the administrator's browser send a POST with QTS's cookies, but it cannot
read our page, so it cannot know the token. Tokens stop working when the session changes or the service
restarts (the page is simply reloaded)."""

from __future__ import annotations

import hashlib
import hmac
import os


class CsrfTokens:
    def __init__(self, secret: bytes = b"") -> None:
        self._secret = secret or os.urandom(32)

    def token(self, session: str) -> str:
        return hmac.new(self._secret, b"csrf:" + session.encode("utf-8"), hashlib.sha256).hexdigest()[:40]

    def valid(self, session: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(self.token(session), token)
