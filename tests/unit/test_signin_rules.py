"""Sign-in without a provider: ID-token verification (every refusal), the key set's
algorithms, the sign-in cookie, who may host, the settings it needs, and rooms whose hosts
sign in (nobody else moderates; guests wait in the lobby or for a host)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from pydantic import ValidationError

from veche.ids import RoomName
from veche.oidc import (
    ProviderMetadata,
    ProviderUnavailable,
    SignInFailed,
    pkce_challenge,
    usable_keys,
    verify_id_token,
)
from veche.rooms import Room
from veche.settings import Settings
from veche.signin import CookieSigner, may_host

ISSUER = "https://id.example.org/realms/uni"
CLIENT = "veche"
NONCE = "n-0S6_WzA2Mj"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})
PUBLIC = KeySet.import_key_set({"keys": [KEY.as_dict(private=False)]})
RS256 = frozenset({"RS256"})


def _token(key: Any = KEY, alg: str = "RS256", kid: str = "k1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "248289761001",
        "nonce": NONCE,
        "iat": now,
        "exp": now + 300,
        "name": "Jane Doe",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": alg, "kid": kid}, claims, key)


def _verify(token: str, keys: KeySet = PUBLIC) -> Any:
    return verify_id_token(
        token,
        keys,
        issuer=ISSUER,
        client_id=CLIENT,
        nonce=NONCE,
        algorithms=RS256,
        now=time.time(),
    )


def test_a_valid_id_token_gives_its_claims() -> None:
    """Signature, issuer, audience, expiry and nonce right: the claims come back."""
    assert _verify(_token())["sub"] == "248289761001"


OTHER_KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})
REFUSED = {
    "forged (another key, same kid)": _token(key=OTHER_KEY),
    "expired": _token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200),
    "replayed (another nonce)": _token(nonce="the-nonce-of-another-sign-in"),
    "no nonce": _token(nonce=None),
    "wrong audience": _token(aud="another-client"),
    "several audiences, azp not Veche": _token(aud=[CLIENT, "other"], azp="other"),
    "wrong issuer": _token(iss="https://evil.example.org"),
    "no subject": _token(sub=None),
    "HMAC with the public key's bytes": _token(key=OctKey.generate_key(256), alg="HS256"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_id_tokens(case: str) -> None:
    """Each bad ID token is refused with SignInFailed."""
    with pytest.raises(SignInFailed):
        _verify(REFUSED[case])


def test_an_unsigned_token_is_refused() -> None:
    """``alg: none`` is never accepted."""
    import base64
    import json

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    body = {"iss": ISSUER, "aud": CLIENT, "sub": "x", "nonce": NONCE, "exp": 2**33, "iat": 1}
    with pytest.raises(SignInFailed):
        _verify(f"{part({'alg': 'none', 'kid': 'k1'})}.{part(body)}.")


def test_an_unknown_key_id_asks_for_the_keys_again() -> None:
    """A token signed with a key the set does not hold (the provider rotated) raises
    LookupError, which makes the provider's keys be fetched again."""
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    with pytest.raises(LookupError):
        _verify(_token(key=rotated, kid="k2"))
    keys = KeySet.import_key_set({"keys": [rotated.as_dict(private=False)]})
    assert _verify(_token(key=rotated, kid="k2"), keys)["name"] == "Jane Doe"


def test_a_key_set_with_an_unexpected_algorithm_is_refused() -> None:
    """Keys that name another algorithm (or an HMAC secret) are not used; a set left with
    none is the provider's fault, not the visitor's."""
    ec = ECKey.generate_key("P-256", parameters={"kid": "e1", "alg": "ES256"})
    with pytest.raises(ProviderUnavailable):
        usable_keys({"keys": [ec.as_dict(private=False)]}, RS256)
    with pytest.raises(ProviderUnavailable):
        usable_keys({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}, RS256)
    mixed = usable_keys({"keys": [ec.as_dict(private=False), KEY.as_dict(private=False)]}, RS256)
    assert _verify(_token(), mixed)["sub"] == "248289761001"


def test_discovery_pins_the_announced_asymmetric_algorithms() -> None:
    """Only the announced algorithms that are public-key signatures are accepted; a provider
    announcing only HS256 or none, or another issuer, is refused."""
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": ISSUER + "/auth",
        "token_endpoint": ISSUER + "/token",
        "jwks_uri": ISSUER + "/certs",
        "id_token_signing_alg_values_supported": ["RS256", "HS256", "none"],
    }
    assert ProviderMetadata.parse(document, ISSUER).algorithms == RS256
    with pytest.raises(ProviderUnavailable):
        ProviderMetadata.parse(
            {**document, "id_token_signing_alg_values_supported": ["HS256", "none"]}, ISSUER
        )
    with pytest.raises(ProviderUnavailable):
        ProviderMetadata.parse({**document, "issuer": "https://evil.example.org"}, ISSUER)


def test_pkce_challenge_is_rfc7636_s256() -> None:
    """The RFC 7636 appendix B example."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_cookies_are_checked_with_the_shared_secret_and_expire() -> None:
    """A cookie signed by one node is valid on another with the same secret; another secret,
    another purpose, a tampered value or a past expiry is not."""
    secret = "a-session-secret-shared-by-every-node-0123"
    now = time.time()
    value = CookieSigner(secret).sign("session", {"sub": "x", "exp": int(now) + 60})
    assert CookieSigner(secret).check("session", value, now=now) == {
        "sub": "x",
        "exp": int(now) + 60,
    }
    assert (
        CookieSigner("another-secret-of-at-least-thirty-two-chars").check("session", value, now=now)
        is None
    )
    assert CookieSigner(secret).check("flow", value, now=now) is None
    assert CookieSigner(secret).check("session", value[:-2] + "xx", now=now) is None
    assert CookieSigner(secret).check("session", value, now=now + 120) is None


@pytest.mark.parametrize(
    ("claims", "rule", "host"),
    [
        ({"groups": ["staff"]}, ("groups", "staff"), True),
        ({"groups": ["/staff", "/physics"]}, ("groups", "staff"), True),
        ({"groups": ["students"]}, ("groups", "staff"), False),
        ({"role": "staff"}, ("role", "staff"), True),
        ({}, ("groups", "staff"), False),
        ({}, None, True),
    ],
)
def test_who_may_host(claims: dict[str, Any], rule: tuple[str, str] | None, host: bool) -> None:
    """``oidc_hosts``: a claim equal to the value or a list holding it (or its group path)."""
    assert may_host(claims, rule) is host


def test_sign_in_needs_its_settings() -> None:
    """An issuer without client or session secret stops the start, naming what is missing."""
    with pytest.raises(ValidationError, match="session_secret"):
        Settings(oidc_issuer=ISSUER, oidc_client_id="c", oidc_client_secret="s")
    with pytest.raises(ValidationError, match="oidc_client_id"):
        Settings(oidc_issuer=ISSUER, session_secret="x" * 32)
    with pytest.raises(ValidationError, match="session_secret"):
        Settings(
            oidc_issuer=ISSUER, oidc_client_id="c", oidc_client_secret="s", session_secret="short"
        )
    with pytest.raises(ValidationError, match="oidc_hosts"):
        Settings(oidc_hosts="staff")
    settings = Settings(oidc_hosts="groups = staff")
    assert settings.host_rule == ("groups", "staff")
    assert not settings.oidc


def _hosted(guests: Any) -> Room:
    return Room(RoomName("lecture"), capacity=10, now=0.0, hosted=guests)


def test_a_hosted_room_makes_nobody_moderator_for_being_first_or_last() -> None:
    """With hosts signing in, a guest entering an empty room is a participant, and stays one
    when the host leaves."""
    room = _hosted("allow")
    guest, _ = room.join("Guest", now=1.0)
    assert guest.id in room
    assert guest.role == "participant"
    host, _ = room.join("Host", now=2.0, moderator=True, signed_in=True)
    assert host.role == "moderator"
    room.leave(host.id, "left", now=3.0)
    assert guest.role == "participant"
    assert room.stop_expecting().deliveries == ()
    assert guest.role == "participant"


def test_host_first_guests_wait_and_enter_when_a_host_arrives() -> None:
    """host-first: guests wait for a host (the room stays while they do), and all enter
    when one arrives; later guests enter at once while a host is present."""
    room = _hosted("host-first")
    guest, _ = room.join("Guest", now=1.0)
    assert guest.id not in room
    assert room.awaits_host(guest.id)
    assert room.empty_since is None, "a room with people waiting for a host is kept"
    host, _ = room.join("Host", now=2.0, moderator=True)
    outcome = room.host_arrived()
    assert [p.id for p in outcome.admitted] == [guest.id]
    late, _ = room.join("Late", now=3.0)
    assert late.id in room
    room.leave(host.id, "left", now=4.0)
    newcomer, _ = room.join("Newcomer", now=5.0)
    assert room.awaits_host(newcomer.id)


def test_host_first_guests_wait_for_admission_where_the_lobby_is_on() -> None:
    """host-first in a room whose moderator turned the lobby on: when a host arrives, those
    waiting for one are told they now wait for admission, and the host sees them."""
    room = _hosted("host-first")
    host, _ = room.join("Host", now=1.0, moderator=True)
    room.configure(host.id, lobby=True)
    room.leave(host.id, "left", now=2.0)
    guest, _ = room.join("Guest", now=3.0)
    assert room.awaits_host(guest.id)
    host, _ = room.join("Host", now=4.0, moderator=True)
    outcome = room.host_arrived()
    assert outcome.admitted == ()
    assert not room.awaits_host(guest.id)
    told = {(d.to, d.message.type) for d in outcome.deliveries}
    assert told == {((guest.id,), "waiting"), ((host.id,), "lobby_updated")}


def test_lobby_guests_wait_for_admission_even_with_a_host_present() -> None:
    """lobby: every guest waits until a moderator admits it; a host's arrival admits
    nobody by itself."""
    room = _hosted("lobby")
    host, _ = room.join("Host", now=1.0, moderator=True)
    guest, _ = room.join("Guest", now=2.0)
    assert guest.id not in room
    assert not room.awaits_host(guest.id)
    assert room.host_arrived().admitted == ()
    assert [p.id for p in room.admit(host.id, guest.id, everyone=False).admitted] == [guest.id]
