"""A room's entry rules and settings: lock, lobby, password, 'moderator must allow'.

Passwords are kept only as salted scrypt hashes and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from veche.protocol import RoomState

__all__ = ["RoomPolicy"]


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


@dataclass(slots=True)
class RoomPolicy:
    """The settings a moderator controls."""

    locked: bool = False
    lobby: bool = False
    moderator_must_allow: bool = False
    recording: bool = False
    _salt: bytes = b""
    _password_hash: bytes | None = None

    @property
    def has_password(self) -> bool:
        """Whether joining needs a password."""
        return self._password_hash is not None

    def set_password(self, password: str) -> None:
        """Require ``password`` from now on; an empty string removes the requirement."""
        if not password:
            self._password_hash = None
            return
        self._salt = secrets.token_bytes(16)
        self._password_hash = _hash(password, self._salt)

    def password_matches(self, password: str | None) -> bool:
        """Whether ``password`` opens the room (always, when it has none)."""
        if self._password_hash is None:
            return True
        if password is None:
            return False
        return hmac.compare_digest(_hash(password, self._salt), self._password_hash)

    def state(self) -> RoomState:
        """The settings as participants see them (never the password)."""
        return RoomState(
            locked=self.locked,
            lobby=self.lobby,
            has_password=self.has_password,
            moderator_must_allow=self.moderator_must_allow,
            recording=self.recording,
        )
