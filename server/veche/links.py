"""Links that carry their own permission: a path, an expiry time and an HMAC of both.

A moderator is given such a link to download a recording it made; whoever holds the link may
fetch that one file until it expires, without an account. The key is this node's: made once in
``data_dir`` (``link.key``, readable by this user only) so that links survive a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

__all__ = ["LinkSigner", "node_key"]

log = logging.getLogger(__name__)


def node_key(data_dir: Path) -> bytes:
    """This node's link key, made on first use in ``data_dir``; a key of this process only
    (links end with it) when the directory cannot be written."""
    path = data_dir / "link.key"
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(secrets.token_bytes(32))
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except OSError as exc:
        log.warning("link key not kept; links end with this process", extra={"error": str(exc)})
    return secrets.token_bytes(32)


class LinkSigner:
    """Signs and checks ``path`` + ``expires`` with ``key``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _signature(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, path: str, *, now: float, ttl: float) -> str:
        """``path`` (unescaped) with the query that lets it be fetched for ``ttl`` seconds."""
        expires = int(now + ttl)
        query = urlencode({"expires": expires, "sig": self._signature(path, expires)})
        return f"{quote(path)}?{query}"

    def allows(self, path: str, expires: str, signature: str, *, now: float) -> bool:
        """Whether ``signature`` was made for ``path`` and ``expires``, and that is not past."""
        try:
            deadline = int(expires)
        except ValueError:
            return False
        expected = self._signature(path, deadline)
        return hmac.compare_digest(expected, signature) and now < deadline
