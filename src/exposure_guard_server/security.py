"""Secrets: node keys, enrollment secrets, API tokens and sessions are random and stored only as SHA-256
(they carry 192+ bits of entropy, so a fast hash is enough); admin passwords use scrypt with a salt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Tuple

NODE_KEY_PREFIX = "egn_"
ENROLL_SECRET_PREFIX = "ege_"
API_TOKEN_PREFIX = "egt_"

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2 ** 14, 8, 1


def new_secret(prefix: str, nbytes: int = 32) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def display_prefix(token: str) -> str:
    """What lists show of a secret: enough to tell them apart, useless to an attacker."""
    return token[:10]


def new_token(prefix: str) -> Tuple[str, str, str]:
    """(token, hash, display prefix)."""
    token = new_secret(prefix)
    return token, token_hash(token), display_prefix(token)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _b64(salt), _b64(digest))


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                                dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Verified against when the user does not exist, so a wrong user name costs the same time as a wrong password.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))
