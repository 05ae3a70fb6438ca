"""Token authentication (``auth=jwt``): who may join which room, under which name and role.

A token is a JWT signed with the configured algorithm only (``alg`` is pinned: ``none`` and
algorithm confusion are refused by construction) and must carry ``sub`` (the identity),
``room`` (a room name, or ``*``), ``name``, ``exp``, ``nbf`` and ``aud``; ``moderator: true``
makes the holder a moderator. Every refusal gives the same answer: the reason is logged, not
sent.
"""

from __future__ import annotations

import hmac
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jwt

from veche.errors import VecheError
from veche.settings import Settings

__all__ = ["AuthError", "Identity", "bearer_matches", "mint_token", "verify_token"]


def bearer_matches(authorization: str, secret: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <secret>`` (compared in constant
    time; anything else, a missing header included, is no match)."""
    given = authorization[7:] if authorization.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), secret.encode())


class AuthError(VecheError):
    """A token was refused; the message is for the log only."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a valid token (or a sign-in: see ``veche.signin``) says about its holder.
    ``name_editable``: the holder may choose its display name (``hello.name``) instead."""

    subject: str
    room: str
    name: str
    moderator: bool
    name_editable: bool = False

    def allows(self, room: str) -> bool:
        """Whether the token admits to ``room`` (a normalised name); the ``room`` claim is
        case-folded as room names are, so ``Board`` admits to ``board``, and ``*`` to every room."""
        if self.room == "*":
            return True
        # The folding of rooms.names.normalize_room_name (this layer may not import it): a claim
        # that is not a valid name after it equals no normalised name, so it admits nowhere.
        claim = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", self.room).lower())
        return claim == room


def _verification_key(settings: Settings) -> str:
    if settings.jwt_algorithm == "HS256":
        if settings.jwt_secret is None:
            raise AuthError("no jwt_secret configured")
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_public_key_file is None:
        raise AuthError("no jwt_public_key_file configured")
    return Path(settings.jwt_public_key_file).read_text(encoding="utf-8")


def verify_token(token: str, settings: Settings) -> Identity:
    """The identity a token proves, or :class:`AuthError`."""
    try:
        claims = jwt.decode(
            token,
            _verification_key(settings),
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            options={"require": ["exp", "nbf", "aud", "sub", "room", "name"]},
            leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"token refused: {type(exc).__name__}") from None
    room, name, subject = claims["room"], claims["name"], claims["sub"]
    if not all(isinstance(value, str) and value for value in (room, name, subject)):
        raise AuthError("token refused: empty or non-text claim")
    return Identity(
        subject=subject, room=room, name=name, moderator=claims.get("moderator") is True
    )


def mint_token(
    settings: Settings,
    *,
    room: str,
    name: str,
    subject: str,
    moderator: bool = False,
    ttl: int = 3600,
    private_key: str | None = None,
) -> str:
    """A token for ``veche token``: HS256 with the configured secret, or RS256/ES256 with
    ``private_key`` (PEM text)."""
    now = int(time.time())
    claims = {
        "sub": subject,
        "room": room,
        "name": name,
        "moderator": moderator,
        "aud": settings.jwt_audience,
        "nbf": now - 5,
        "iat": now,
        "exp": now + ttl,
    }
    if settings.jwt_algorithm == "HS256":
        key = _verification_key(settings)
    elif private_key is None:
        raise AuthError(f"{settings.jwt_algorithm} tokens need --private-key")
    else:
        key = private_key
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)
