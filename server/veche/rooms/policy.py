"""A room's entry rules and settings: lock, lobby, password, 'moderator must allow'.

Passwords are kept only as salted scrypt hashes and compared in constant time. Hashing is slow
on purpose (about 45 ms), so the room never hashes: :func:`hash_password` is called by whoever
holds the event loop, off it, and the room is handed the result.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from veche.protocol import RoomState

__all__ = ["PasswordHash", "RoomPolicy", "hash_password"]


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A password's scrypt ``digest`` with its ``salt``: a room's password, or an attempt at
    it hashed with that room's salt."""

    salt: bytes
    digest: bytes = field(repr=False)


def hash_password(password: str, salt: bytes | None = None) -> PasswordHash:
    """Hash ``password`` with ``salt`` (a fresh random one by default). CPU-bound for about
    45 ms and releases the GIL: run it in a worker thread, never on the event loop."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return PasswordHash(salt, digest)


@dataclass(slots=True)
class RoomPolicy:
    """The settings a moderator controls."""

    locked: bool = False
    lobby: bool = False
    moderator_must_allow: bool = False
    recording: bool = False
    password: PasswordHash | None = field(default=None, repr=False)
    """The password's hash, or ``None`` when joining needs none."""

    @property
    def has_password(self) -> bool:
        """Whether joining needs a password."""
        return self.password is not None

    @property
    def salt(self) -> bytes | None:
        """The salt an attempt at the password must be hashed with (``None``: no password)."""
        return None if self.password is None else self.password.salt

    def password_matches(self, attempt: PasswordHash | None) -> bool:
        """Whether ``attempt`` (a password hashed with :attr:`salt`) opens the room (always,
        when it has no password). An attempt hashed with another salt (the password changed
        meanwhile) does not."""
        if self.password is None:
            return True
        if attempt is None or attempt.salt != self.password.salt:
            return False
        return hmac.compare_digest(attempt.digest, self.password.digest)

    def state(self) -> RoomState:
        """The settings as participants see them (never the password)."""
        return RoomState(
            locked=self.locked,
            lobby=self.lobby,
            has_password=self.has_password,
            moderator_must_allow=self.moderator_must_allow,
            recording=self.recording,
        )
