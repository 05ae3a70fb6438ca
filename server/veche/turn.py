"""Time-limited TURN credentials (the "TURN REST API" that coturn's ``use-auth-secret`` checks).

The username is ``<expiry unix time>:<user>`` and the password is
``base64(HMAC-SHA1(secret, username))``: coturn recomputes it from the shared secret, so the
secret itself never leaves the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["turn_credentials"]


def turn_credentials(secret: str, user: str, *, ttl: int, now: float) -> tuple[str, str]:
    """``(username, password)`` valid for ``ttl`` seconds from ``now`` for ``user``."""
    username = f"{int(now) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()
