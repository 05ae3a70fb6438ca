"""The OpenID Connect provider as Veche's sign-in sees it: discovery, keys, code exchange and the
ID token's verification.

Veche is a confidential client using the authorization code flow with PKCE (S256), ``state``
and ``nonce``. The provider's discovery document and key set are fetched with aiohttp's client
and kept in memory (nothing a sign-in needs is kept per node: a node that never saw the
provider fetches them on first use). The key set is fetched again when a token names a key it
does not hold (the provider rotated its keys), at most once per ``JWKS_REFETCH`` seconds so that
forged key ids cannot make Veche hammer the provider. ID tokens are verified with joserfc: the
signature with the provider's keys, the algorithm pinned to the asymmetric ones the provider
announces (``none`` and HMAC are never accepted), then ``iss``, ``aud``, ``exp``, ``iat`` and
``nonce``. Every failure is :class:`SignInFailed` (the token or the answer was wrong: the
visitor may try again) or :class:`ProviderUnavailable` (the provider could not be reached or
answered nonsense); the message is for the log only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus, urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from veche.errors import VecheError
from veche.settings import Settings

__all__ = [
    "ALLOWED_ALGORITHMS",
    "Authorization",
    "Claims",
    "Provider",
    "ProviderMetadata",
    "ProviderUnavailable",
    "SignInFailed",
    "pkce_challenge",
    "usable_keys",
    "verify_id_token",
]

ALLOWED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""ID-token algorithms Veche accepts at all (the provider's announced list is intersected with
these): public-key signatures only."""
METADATA_TTL: Final = 3600.0
"""Seconds the discovery document is kept before it is fetched again."""
JWKS_REFETCH: Final = 30.0
"""Seconds at least between two fetches of the key set for an unknown key id."""
HTTP_TIMEOUT: Final = 10.0
"""Seconds one request to the provider may take."""
LEEWAY: Final = 60
"""Seconds of clock difference tolerated between Veche and the provider."""
MAX_DOCUMENT: Final = 256 * 1024
"""Bytes accepted in one answer of the provider."""

Claims = Mapping[str, Any]


class SignInFailed(VecheError):
    """The provider's answer or ID token was refused (forged, expired, replayed, for another
    client or from another issuer, a state that does not match); the message is for the log."""


class ProviderUnavailable(VecheError):
    """The provider could not be reached, or did not answer as a provider does."""


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """What Veche uses of the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: frozenset[str]
    """The ID-token algorithms accepted from this provider: those it announces that are in
    :data:`ALLOWED_ALGORITHMS`."""

    @classmethod
    def parse(cls, document: object, expected_issuer: str) -> ProviderMetadata:
        """The metadata in ``document``, which must name ``expected_issuer`` exactly."""
        if not isinstance(document, dict):
            raise ProviderUnavailable("discovery document is not a JSON object")
        if str(document.get("issuer", "")).rstrip("/") != expected_issuer:
            raise ProviderUnavailable(
                f"discovery document names issuer {document.get('issuer')!r}, "
                f"not {expected_issuer!r}"
            )
        fields = ("authorization_endpoint", "token_endpoint", "jwks_uri")
        urls = {name: document.get(name) for name in fields}
        for name, url in urls.items():
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise ProviderUnavailable(f"discovery document has no usable {name}")
        announced = document.get("id_token_signing_alg_values_supported", ["RS256"])
        if not isinstance(announced, list):
            raise ProviderUnavailable("id_token_signing_alg_values_supported is not a list")
        algorithms = frozenset(a for a in announced if a in ALLOWED_ALGORITHMS)
        if not algorithms:
            raise ProviderUnavailable(
                f"the provider signs ID tokens only with {announced!r}; Veche accepts "
                f"{sorted(ALLOWED_ALGORITHMS)}"
            )
        logout = document.get("end_session_endpoint")
        return cls(
            issuer=expected_issuer,
            authorization_endpoint=str(urls["authorization_endpoint"]),
            token_endpoint=str(urls["token_endpoint"]),
            jwks_uri=str(urls["jwks_uri"]),
            end_session_endpoint=logout if isinstance(logout, str) and logout else None,
            algorithms=algorithms,
        )


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``code_verifier`` (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def usable_keys(document: object, algorithms: frozenset[str]) -> KeySet:
    """The signing keys of a JWKS document that may verify one of ``algorithms``: a key that
    names another algorithm (``alg``) or another use (``use``) is left out. Raises
    :class:`ProviderUnavailable` if none is left."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ProviderUnavailable("the key set is not a JWKS document")
    kept = [
        key
        for key in document["keys"]
        if isinstance(key, dict)
        and key.get("kty") in ("RSA", "EC", "OKP")
        and key.get("use", "sig") == "sig"
        and key.get("alg", next(iter(algorithms))) in algorithms
    ]
    if not kept:
        raise ProviderUnavailable(
            f"the key set has no signing key for {sorted(algorithms)} (an unexpected algorithm)"
        )
    try:
        return KeySet.import_key_set({"keys": kept})
    except (JoseError, ValueError, TypeError) as exc:
        raise ProviderUnavailable(f"the key set cannot be read: {exc}") from None


def verify_id_token(
    token: str,
    keys: KeySet,
    *,
    issuer: str,
    client_id: str,
    nonce: str,
    algorithms: frozenset[str],
    now: float,
) -> Claims:
    """The claims of ``token`` once its signature (by one of ``keys``, with one of
    ``algorithms``), ``iss``, ``aud`` (and ``azp`` when there are several audiences), ``exp``,
    ``iat``, ``sub`` and ``nonce`` are checked; else :class:`SignInFailed`. A token that
    names a key ``keys`` do not hold raises :class:`LookupError` (fetch the keys again)."""
    try:
        decoded = jwt.decode(token, keys, algorithms=sorted(algorithms))
    except JoseError as exc:
        if exc.error == "invalid_key_id":
            raise LookupError(str(exc)) from None
        raise SignInFailed(f"ID token refused: {exc.error}") from None
    claims = decoded.claims
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=LEEWAY,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
        nonce={"essential": True, "value": nonce},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise SignInFailed(f"ID token refused: {exc.error} ({exc.description})") from None
    audience = claims["aud"]
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise SignInFailed("ID token refused: several audiences and azp is not Veche")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise SignInFailed("ID token refused: empty subject")
    return claims


@dataclass(frozen=True, slots=True)
class Authorization:
    """One sign-in under way: where to send the browser, and what the callback must match."""

    url: str
    state: str
    nonce: str
    verifier: str


class Provider:
    """The configured provider: its metadata and keys (cached), and the requests of a sign-in.

    ``http`` opens the client session for each request (the app gives one that lives as long
    as it does); ``clock`` is for tests that need another time.
    """

    def __init__(
        self,
        settings: Settings,
        http: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.oidc_issuer is not None
        assert settings.oidc_client_id is not None
        assert settings.oidc_client_secret is not None
        self.issuer = settings.oidc_issuer
        self.client_id = settings.oidc_client_id
        self._secret = settings.oidc_client_secret
        self._scopes = ["openid", *(s for s in settings.oidc_scopes if s != "openid")]
        self._http = http
        self._clock = clock
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = float("-inf")
        self._keys: KeySet | None = None
        self._refetched_at = float("-inf")

    async def metadata(self) -> ProviderMetadata:
        """The discovery document (fetched at most every ``METADATA_TTL`` seconds)."""
        now = self._clock()
        if self._metadata is None or now - self._metadata_at > METADATA_TTL:
            url = self.issuer + "/.well-known/openid-configuration"
            self._metadata = ProviderMetadata.parse(await self._get_json(url), self.issuer)
            self._metadata_at = now
        return self._metadata

    async def authorization(self, redirect_uri: str, *, locale: str | None = None) -> Authorization:
        """A new sign-in: fresh ``state``, ``nonce`` and PKCE verifier, and the provider's URL
        to send the browser to."""
        metadata = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self._scopes),
            "state": state,
            "nonce": nonce,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if locale:
            query["ui_locales"] = locale
        separator = "&" if "?" in metadata.authorization_endpoint else "?"
        url = metadata.authorization_endpoint + separator + urlencode(query)
        return Authorization(url=url, state=state, nonce=nonce, verifier=verifier)

    async def sign_in(self, code: str, *, redirect_uri: str, verifier: str, nonce: str) -> Claims:
        """Exchange the callback's ``code`` for tokens and return the verified ID token's
        claims."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        # client_secret_basic (RFC 6749 2.3.1): both form-encoded, then Basic.
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._secret.get_secret_value())}"
        headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        answer = await self._request("POST", metadata.token_endpoint, data=form, headers=headers)
        if not isinstance(answer, dict) or not isinstance(answer.get("id_token"), str):
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SignInFailed(f"the token endpoint gave no ID token (error: {error!r})")
        return await self.verify(answer["id_token"], nonce=nonce)

    async def verify(self, token: str, *, nonce: str) -> Claims:
        """The verified claims of an ID token (see :func:`verify_id_token`); the key set is
        fetched again once if the token names a key it does not hold."""
        metadata = await self.metadata()
        for attempt in range(2):
            keys = await self._key_set(metadata, refresh=attempt > 0)
            try:
                return verify_id_token(
                    token,
                    keys,
                    issuer=metadata.issuer,
                    client_id=self.client_id,
                    nonce=nonce,
                    algorithms=metadata.algorithms,
                    now=self._clock(),
                )
            except LookupError as exc:
                reason = str(exc)
        raise SignInFailed(f"ID token refused: {reason}")

    def logout_url(self, metadata: ProviderMetadata, post_logout_redirect_uri: str) -> str | None:
        """The provider's RP-initiated logout URL, if it announces one."""
        if metadata.end_session_endpoint is None:
            return None
        query = urlencode(
            {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        )
        separator = "&" if "?" in metadata.end_session_endpoint else "?"
        return metadata.end_session_endpoint + separator + query

    async def _key_set(self, metadata: ProviderMetadata, *, refresh: bool) -> KeySet:
        """The provider's keys; ``refresh`` (a token named a key they lack) fetches them again
        unless that was done within ``JWKS_REFETCH`` seconds."""
        now = self._clock()
        again = refresh and now - self._refetched_at >= JWKS_REFETCH
        if self._keys is None or again:
            self._keys = usable_keys(await self._get_json(metadata.jwks_uri), metadata.algorithms)
            if refresh:
                self._refetched_at = now
        return self._keys

    async def _get_json(self, url: str) -> object:
        return await self._request("GET", url)

    async def _request(self, method: str, url: str, **kwargs: Any) -> object:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        try:
            async with self._http().request(
                method, url, timeout=timeout, allow_redirects=False, **kwargs
            ) as response:
                body = await response.content.read(MAX_DOCUMENT + 1)
                if len(body) > MAX_DOCUMENT:
                    raise ProviderUnavailable(f"{url} answered more than {MAX_DOCUMENT} bytes")
                if response.status >= 500:
                    raise ProviderUnavailable(f"{url} answered HTTP {response.status}")
                try:
                    return json.loads(body)
                except ValueError:
                    if response.status >= 400:
                        raise SignInFailed(f"{url} answered HTTP {response.status}") from None
                    raise ProviderUnavailable(f"{url} did not answer JSON") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnavailable(f"{url} cannot be reached: {type(exc).__name__}") from None
