"""Sign-in's refusals end to end, against a provider that misbehaves on purpose (an aiohttp app
served on loopback: the real provider process never forges a token): each bad ID token, a
rotated key, a key set with an unexpected algorithm and a provider that fails come back to the
start page with an error code and no sign-in cookie; a good one signs in, with PKCE checked by
the provider."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from veche.app import create_app

Client = TestClient[Any, Any]


class HostileProvider:
    """An OpenID provider whose answers each test chooses: ``claims`` overrides the ID
    token's claims, ``key`` signs it, ``jwks`` is the key set it publishes, ``token_status``
    the token endpoint's HTTP status."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
        self.jwks: list[dict[str, Any]] = [self.key.as_dict(private=False)]
        self.claims: dict[str, Any] = {}
        self.token_status = 200
        self.issuer = ""
        self.challenges: dict[str, str] = {}
        """code -> the PKCE challenge of the authorization it was issued for."""
        self.nonces: dict[str, str] = {}
        self.jwks_fetches = 0
        self.pkce_ok: bool | None = None
        self.logout = True
        """Whether discovery announces an end_session_endpoint."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.keys)
        app.router.add_post("/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": self.issuer + "/authorize",
                "token_endpoint": self.issuer + "/token",
                "jwks_uri": self.issuer + "/jwks",
                **({"end_session_endpoint": self.issuer + "/logout"} if self.logout else {}),
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": self.jwks})

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        code = str(form["code"])
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        self.pkce_ok = computed == self.challenges.get(code)
        if self.token_status != 200:
            return web.json_response({"error": "server_error"}, status=self.token_status)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": "veche",
            "sub": "u-1",
            "name": "Ivan Teacher",
            "groups": ["staff"],
            "nonce": self.nonces.get(code),
            "iat": now,
            "exp": now + 300,
        }
        claims.update(self.claims)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"alg": "RS256", "kid": self.key.kid}
        token = jwt.encode(header, claims, self.key)
        return web.json_response({"access_token": "a", "token_type": "Bearer", "id_token": token})


@pytest.fixture
async def provider(aiohttp_server: Callable[..., Any]) -> HostileProvider:
    hostile = HostileProvider()
    server: TestServer = await aiohttp_server(hostile.app())
    hostile.issuer = str(server.make_url("")).rstrip("/")
    return hostile


@pytest.fixture
async def veche(
    provider: HostileProvider, aiohttp_client: Callable[..., Any], make_settings: Any
) -> Client:
    settings = make_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id="veche",
        oidc_client_secret="client-secret",
        session_secret="a-session-secret-shared-by-every-node-0123",
        oidc_hosts="groups=staff",
    )
    client: Client = await aiohttp_client(create_app(settings))
    return client


async def _sign_in(veche: Client, provider: HostileProvider, **headers: str) -> Any:
    """Start a sign-in, let the 'provider' issue a code for it, and come back with it: the
    callback's response."""
    start = await veche.get("/auth/login", allow_redirects=False, headers=headers)
    assert start.status == 303
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    code = "code-" + query["state"][0][:8]
    provider.challenges[code] = query["code_challenge"][0]
    provider.nonces[code] = query["nonce"][0]
    return await veche.get(
        "/auth/callback",
        params={"code": code, "state": query["state"][0]},
        allow_redirects=False,
        headers=headers,
    )


async def _signed_in(veche: Client) -> bool:
    me = await (await veche.get("/auth/me")).json()
    signed_in: bool = me["signed_in"]
    return signed_in


async def test_a_good_id_token_signs_in_with_pkce(veche: Client, provider: HostileProvider) -> None:
    """The provider gets the verifier of the challenge it was shown; the person is signed in
    as a host."""
    done = await _sign_in(veche, provider)
    assert done.headers["Location"] == "/"
    assert provider.pkce_ok is True
    me = await (await veche.get("/auth/me")).json()
    assert (me["signed_in"], me["name"], me["host"]) == (True, "Ivan Teacher", True)


BAD_TOKENS: dict[str, dict[str, Any]] = {
    "expired": {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200},
    "replayed (the nonce of another sign-in)": {"nonce": "a-nonce-veche-never-sent"},
    "wrong audience": {"aud": "another-client"},
    "wrong issuer": {"iss": "https://evil.example.org"},
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_id_tokens_sign_nobody_in(
    veche: Client, provider: HostileProvider, case: str
) -> None:
    """Each bad ID token lands on the start page with signin_failed, without a cookie."""
    provider.claims = BAD_TOKENS[case]
    done = await _sign_in(veche, provider)
    assert done.headers["Location"] == "/?error=signin_failed"
    assert "veche_signin=" not in " ".join(done.headers.getall("Set-Cookie", []))
    assert not await _signed_in(veche)


async def test_a_forged_id_token_signs_nobody_in(veche: Client, provider: HostileProvider) -> None:
    """A token signed by a key that is not the provider's, under the provider's key id."""
    published = provider.jwks
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256"})
    provider.jwks = published
    done = await _sign_in(veche, provider)
    assert done.headers["Location"] == "/?error=signin_failed"
    assert not await _signed_in(veche)


async def test_a_rotated_key_is_fetched_once(veche: Client, provider: HostileProvider) -> None:
    """After a sign-in, the provider rotates its key: the next token names the new key id,
    the key set is fetched again and the sign-in succeeds; a forged key id right after is
    refused without another fetch (at most one refetch per 30 s)."""
    assert (await _sign_in(veche, provider)).headers["Location"] == "/"
    assert provider.jwks_fetches == 1
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256"})
    provider.jwks = [provider.key.as_dict(private=False)]
    assert (await _sign_in(veche, provider)).headers["Location"] == "/"
    assert provider.jwks_fetches == 2
    provider.key = RSAKey.generate_key(2048, parameters={"kid": "k3", "alg": "RS256"})
    assert (await _sign_in(veche, provider)).headers["Location"] == "/?error=signin_failed"
    assert provider.jwks_fetches == 2


async def test_a_key_set_with_an_unexpected_algorithm_is_refused(
    veche: Client, provider: HostileProvider
) -> None:
    """Discovery announces RS256 but the key set holds only an ES256 key: nobody is signed
    in, and the start page says the sign-in service is not usable."""
    ec = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256"})
    provider.jwks = [ec.as_dict(private=False)]
    done = await _sign_in(veche, provider)
    assert done.headers["Location"] == "/?error=signin_unavailable"
    assert not await _signed_in(veche)


async def test_a_failing_token_endpoint_is_unavailable(
    veche: Client, provider: HostileProvider
) -> None:
    """The provider answers 500: the start page says sign-in cannot be reached; the server
    goes on serving (a guest still joins)."""
    provider.token_status = 500
    done = await _sign_in(veche, provider)
    assert done.headers["Location"] == "/?error=signin_unavailable"
    async with veche.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "version": 1, "room": "still-open", "name": "G"})
        welcome = await ws.receive_json(timeout=5)
        assert welcome["type"] == "welcome"
        assert welcome["participants"][0]["role"] == "participant"


async def test_the_cookie_is_secure_behind_an_https_proxy(
    provider: HostileProvider, aiohttp_client: Callable[..., Any], make_settings: Any
) -> None:
    """Behind a trusted proxy that says the page went out over HTTPS, both sign-in cookies
    are Secure (and the redirect URI is https)."""
    settings = make_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id="veche",
        oidc_client_secret="client-secret",
        session_secret="a-session-secret-shared-by-every-node-0123",
        trust_forwarded=True,
    )
    client: Client = await aiohttp_client(create_app(settings))
    start = await client.get(
        "/auth/login", allow_redirects=False, headers={"X-Forwarded-Proto": "https"}
    )
    query = parse_qs(urlsplit(start.headers["Location"]).query)
    assert query["redirect_uri"][0].startswith("https://")
    (flow,) = start.headers.getall("Set-Cookie")
    assert "; Secure" in flow
    assert "SameSite=Lax" in flow
    assert "HttpOnly" in flow


async def test_without_an_issuer_sign_in_is_off(
    aiohttp_client: Callable[..., Any], make_settings: Any
) -> None:
    """The default server offers no sign-in: /auth/me says so, the other sign-in pages lead
    to the start page, and whoever joins an empty room first moderates it, as always."""
    client: Client = await aiohttp_client(create_app(make_settings()))
    assert await (await client.get("/auth/me")).json() == {"enabled": False}
    for page in ("login", "callback", "logout"):
        response = await client.get(f"/auth/{page}", allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, "/")
        assert "Set-Cookie" not in response.headers
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "version": 1, "room": "as-today", "name": "First"})
        welcome = await ws.receive_json(timeout=5)
        assert welcome["participants"][0]["role"] == "moderator"
        assert welcome["participants"][0]["signed_in"] is False


async def test_a_name_that_may_not_change_is_the_providers(
    provider: HostileProvider, aiohttp_client: Callable[..., Any], make_settings: Any
) -> None:
    """With oidc_name_editable off, the name a signed-in person sends is replaced by the
    provider's; /auth/me tells the page it may not be edited."""
    settings = make_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id="veche",
        oidc_client_secret="client-secret",
        session_secret="a-session-secret-shared-by-every-node-0123",
        oidc_name_editable=False,
    )
    client: Client = await aiohttp_client(create_app(settings))
    assert (await _sign_in(client, provider)).headers["Location"] == "/"
    assert (await (await client.get("/auth/me")).json())["name_editable"] is False
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "hello", "version": 1, "room": "named", "name": "Someone"})
        welcome = await ws.receive_json(timeout=5)
        (me,) = welcome["participants"]
        assert (me["name"], me["role"], me["signed_in"]) == ("Ivan Teacher", "moderator", True)


async def test_sign_out_without_provider_logout_ends_veches_session(
    veche: Client,
    provider: HostileProvider,
    aiohttp_client: Callable[..., Any],
    make_settings: Any,
) -> None:
    """With RP-initiated logout, sign-out sends the browser on to the provider's end-session
    endpoint; a provider without it: sign-out ends Veche's session and returns to the start
    page."""
    assert (await _sign_in(veche, provider)).headers["Location"] == "/"
    out = await veche.get("/auth/logout", allow_redirects=False)
    assert out.headers["Location"].startswith(provider.issuer + "/logout?client_id=veche")
    assert not await _signed_in(veche)
    provider.logout = False
    settings = make_settings(
        oidc_issuer=provider.issuer,
        oidc_client_id="veche",
        oidc_client_secret="client-secret",
        session_secret="a-session-secret-shared-by-every-node-0123",
    )
    plain: Client = await aiohttp_client(create_app(settings))
    assert (await _sign_in(plain, provider)).headers["Location"] == "/"
    out = await plain.get("/auth/logout", allow_redirects=False)
    assert out.headers["Location"] == "/"
    assert not await _signed_in(plain)


async def test_a_refusal_at_the_provider_says_so(veche: Client) -> None:
    """The person cancels at the provider (``error=access_denied``): the start page says
    signing in was cancelled, and the sign-in under way is over."""
    start = await veche.get("/auth/login", allow_redirects=False)
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    back = await veche.get(
        "/auth/callback",
        params={"error": "access_denied", "state": state},
        allow_redirects=False,
    )
    assert back.headers["Location"] == "/?error=signin_denied"
    assert 'veche_signin_flow=""' in " ".join(back.headers.getall("Set-Cookie"))
    assert not await _signed_in(veche)
