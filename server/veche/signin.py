"""Signing in with the institution's OpenID Connect provider: the pages and the cookies.

``GET /auth/login?next=/r/room`` sends the browser to the provider with a fresh ``state``,
``nonce`` and PKCE verifier, which travel in a short-lived signed cookie (``veche_signin_flow``)
rather than in this node's memory; ``GET /auth/callback`` checks them, exchanges the code and
verifies the ID token (:mod:`veche.oidc`), then sets the sign-in cookie (``veche_signin``) and
returns to ``next``. Both cookies are JWTs signed (HS256, with joserfc) with a key derived from
``session_secret``: every node that shares the secret accepts them, so no node needs to remember
a session and no load balancer needs to be sticky. The sign-in cookie is ``HttpOnly``,
``SameSite=Lax``, ``Secure`` when the page went out over HTTPS, and expires with the session
(``session_ttl``). ``GET /auth/logout`` ends Veche's session and, when the provider announces an
``end_session_endpoint``, the provider's (RP-initiated logout). ``GET /auth/me`` tells the page
whether sign-in is on and who is signed in.

Whatever goes wrong comes back to the start page with an error code (``?error=signin_failed``,
``signin_unavailable``, ``signin_denied``) that the page words in the visitor's language; the
reason is logged. Meetings in progress never depend on the provider: a signed-in cookie is
checked with the shared key alone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from veche.auth import Identity
from veche.oidc import Claims, Provider, ProviderUnavailable, SignInFailed
from veche.settings import Settings
from veche.views import over_https

__all__ = [
    "FLOW_COOKIE",
    "SIGNIN",
    "SIGNIN_COOKIE",
    "CookieSigner",
    "SignIn",
    "SignedIn",
    "may_host",
    "setup_signin",
]

log = logging.getLogger(__name__)

SIGNIN_COOKIE: Final = "veche_signin"
FLOW_COOKIE: Final = "veche_signin_flow"
FLOW_TTL: Final = 600
"""Seconds a sign-in may take at the provider before its state is forgotten."""
NAME_CLAIMS: Final = ("name", "preferred_username", "email")
"""ID-token claims a display name is taken from, the first present."""


def may_host(claims: Claims, rule: tuple[str, str] | None) -> bool:
    """Whether the ID token's ``claims`` satisfy ``oidc_hosts`` (``rule``: ``(claim, value)``,
    ``None`` for anyone): the claim equals the value, or is a list that holds it. A group path
    (``/staff``, as Keycloak writes groups with full paths) matches ``staff`` too."""
    if rule is None:
        return True
    claim, wanted = rule
    value = claims.get(claim)
    values = value if isinstance(value, list) else [value]
    return any(isinstance(v, str | int | bool) and str(v) in (wanted, "/" + wanted) for v in values)


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who a valid sign-in cookie names: the provider's ``issuer`` and ``subject``, the display
    ``name`` it gave, whether its claims made it a ``host``, and when the session ends."""

    issuer: str
    subject: str
    name: str
    host: bool
    expires: int

    @property
    def identity_subject(self) -> str:
        """The identity a room remembers it by (a member key ``sub:oidc:<issuer>|<sub>``):
        the host role belongs to it across reconnections and restarts."""
        return f"oidc:{self.issuer}|{self.subject}"

    def identity(self, *, name_editable: bool) -> Identity:
        """The identity the signalling edge joins it with."""
        return Identity(
            subject=self.identity_subject,
            room="*",
            name=self.name,
            moderator=self.host,
            name_editable=name_editable,
        )


class CookieSigner:
    """Signs and checks the sign-in cookies with a key derived from ``session_secret`` (one
    key per purpose, so a flow cookie never passes as a session)."""

    def __init__(self, secret: str) -> None:
        def derive(purpose: bytes) -> OctKey:
            return OctKey.import_key(hmac.new(secret.encode(), purpose, hashlib.sha256).digest())

        self._keys = {
            "session": derive(b"veche sign-in session"),
            "flow": derive(b"veche sign-in flow"),
        }

    def sign(self, purpose: str, claims: Mapping[str, Any]) -> str:
        """A compact JWT of ``claims`` for ``purpose`` (``session`` or ``flow``)."""
        return jwt.encode({"alg": "HS256"}, dict(claims), self._keys[purpose])

    def check(self, purpose: str, value: str | None, *, now: float) -> dict[str, Any] | None:
        """The claims of a cookie signed for ``purpose`` and not expired, else ``None``."""
        if not value or len(value) > 4096:
            return None
        try:
            token = jwt.decode(value, self._keys[purpose], algorithms=["HS256"])
            jwt.JWTClaimsRegistry(now=int(now), exp={"essential": True}).validate(token.claims)
        except (JoseError, ValueError):
            return None
        return dict(token.claims)


class SignIn:
    """Sign-in for one app: the provider, the cookie signer and the settings they need."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: Callable[[], aiohttp.ClientSession],
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.session_secret is not None
        self.settings = settings
        self.provider = Provider(settings, http, clock=clock)
        self.signer = CookieSigner(settings.session_secret.get_secret_value())
        self._clock = clock

    def signed_in(self, request: web.Request) -> SignedIn | None:
        """Who the request's sign-in cookie names, if it is valid and from the configured
        provider (a cookie from before the issuer changed names nobody)."""
        claims = self.signer.check("session", request.cookies.get(SIGNIN_COOKIE), now=self._clock())
        if claims is None:
            return None
        if claims.get("iss") != self.provider.issuer:
            return None
        try:
            return SignedIn(
                issuer=str(claims["iss"]),
                subject=str(claims["sub"]),
                name=str(claims["name"]),
                host=claims["host"] is True,
                expires=int(claims["exp"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def identity(self, request: web.Request) -> Identity | None:
        """The identity the request's sign-in cookie proves, if any."""
        signed_in = self.signed_in(request)
        if signed_in is None:
            return None
        return signed_in.identity(name_editable=self.settings.oidc_name_editable)

    # ------------------------------------------------------------------ pages

    async def login(self, request: web.Request) -> web.StreamResponse:
        """``GET /auth/login?next=PATH``: off to the provider."""
        target = _next_path(request.query.get("next"))
        try:
            flow = await self.provider.authorization(
                _callback_url(request, self.settings), locale=_locale(request.query.get("lang"))
            )
        except ProviderUnavailable as exc:
            log.warning("sign-in provider unavailable", extra={"reason": exc.message})
            return _back("signin_unavailable")
        response = _redirect(flow.url)
        value = self.signer.sign(
            "flow",
            {
                "state": flow.state,
                "nonce": flow.nonce,
                "verifier": flow.verifier,
                "next": target,
                "exp": int(self._clock()) + FLOW_TTL,
            },
        )
        self._set_cookie(request, response, FLOW_COOKIE, value, FLOW_TTL, path="/auth/")
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        """``GET /auth/callback?code=&state=``: the provider sent the browser back."""
        flow = self.signer.check("flow", request.cookies.get(FLOW_COOKIE), now=self._clock())
        state = request.query.get("state", "")
        if request.query.get("error"):
            # The person said no at the provider, or the provider refused the request.
            error = request.query["error"][:100]
            log.info("sign-in refused by the provider", extra={"error": error})
            return self._cleared(request, _back("signin_denied"))
        if flow is None or not hmac.compare_digest(str(flow.get("state", "")), state):
            log.info("sign-in refused", extra={"reason": "state does not match"})
            return self._cleared(request, _back("signin_failed"))
        try:
            claims = await self.provider.sign_in(
                request.query.get("code", ""),
                redirect_uri=_callback_url(request, self.settings),
                verifier=str(flow["verifier"]),
                nonce=str(flow["nonce"]),
            )
        except SignInFailed as exc:
            log.info("sign-in refused", extra={"reason": exc.message})
            return self._cleared(request, _back("signin_failed"))
        except ProviderUnavailable as exc:
            log.warning("sign-in provider unavailable", extra={"reason": exc.message})
            return self._cleared(request, _back("signin_unavailable"))
        now = int(self._clock())
        expires = now + self.settings.session_ttl
        session = {
            "iss": self.provider.issuer,
            "sub": claims["sub"],
            "name": _display_name(claims),
            "host": may_host(claims, self.settings.host_rule),
            "iat": now,
            "exp": expires,
        }
        response = _redirect(str(flow.get("next", "/")))
        value = self.signer.sign("session", session)
        self._set_cookie(request, response, SIGNIN_COOKIE, value, self.settings.session_ttl)
        log.info("signed in", extra={"host": session["host"]})
        return self._cleared(request, response)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """``GET /auth/logout``: Veche's session ends; so does the provider's where it offers
        RP-initiated logout (it then sends the browser back to the start page)."""
        target = "/"
        if self.signed_in(request) is not None:
            try:
                metadata = await self.provider.metadata()
                back = _base_url(request, self.settings) + "/"
                target = self.provider.logout_url(metadata, back) or "/"
            except ProviderUnavailable as exc:
                log.warning("sign-out at the provider skipped", extra={"reason": exc.message})
        response = _redirect(target)
        response.del_cookie(SIGNIN_COOKIE, path="/")
        return response

    async def me(self, request: web.Request) -> web.Response:
        """``GET /auth/me``: whether sign-in is on, and who is signed in (no secret in it)."""
        signed_in = self.signed_in(request)
        return web.json_response(
            {
                "enabled": True,
                "signed_in": signed_in is not None,
                "name": signed_in.name if signed_in else None,
                "host": signed_in.host if signed_in else False,
                "name_editable": self.settings.oidc_name_editable,
                "guests": self.settings.oidc_guests,
            },
            headers={"Cache-Control": "no-store"},
        )

    def _set_cookie(
        self,
        request: web.Request,
        response: web.StreamResponse,
        name: str,
        value: str,
        max_age: int,
        *,
        path: str = "/",
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="Lax",
            secure=over_https(request),
        )

    def _cleared(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        response.del_cookie(FLOW_COOKIE, path="/auth/")
        return response


SIGNIN: web.AppKey[SignIn] = web.AppKey("signin", SignIn)


def setup_signin(app: web.Application, settings: Settings) -> None:
    """With ``oidc_issuer`` set: sign-in's routes, and an HTTP client for the provider that
    lives as long as the app. Without it, ``/auth/me`` says sign-in is off and the other
    sign-in pages lead to the start page."""
    if not settings.oidc:
        app.router.add_get("/auth/me", _off, name="signin-me")
        for page in ("login", "callback", "logout"):
            app.router.add_get(f"/auth/{page}", _to_start, name=f"signin-{page}")
        return
    holder: list[aiohttp.ClientSession] = []

    def http() -> aiohttp.ClientSession:
        return holder[0]

    signin = app[SIGNIN] = SignIn(settings, http=http)

    async def client(_: web.Application) -> AsyncIterator[None]:
        holder.append(aiohttp.ClientSession())
        yield
        await holder.pop().close()

    app.cleanup_ctx.append(client)
    app.router.add_get("/auth/login", signin.login, name="signin-login")
    app.router.add_get("/auth/callback", signin.callback, name="signin-callback")
    app.router.add_get("/auth/logout", signin.logout, name="signin-logout")
    app.router.add_get("/auth/me", signin.me, name="signin-me")


async def _off(request: web.Request) -> web.Response:
    return web.json_response({"enabled": False}, headers={"Cache-Control": "no-store"})


async def _to_start(request: web.Request) -> web.Response:
    return _redirect("/")


def _locale(value: str | None) -> str | None:
    """The page's language, passed to the provider as ``ui_locales`` if it looks like one."""
    return value if value and re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})?", value) else None


def _display_name(claims: Claims) -> str:
    for claim in NAME_CLAIMS:
        value = claims.get(claim)
        if isinstance(value, str) and value.strip():
            return value.strip()[:64]
    return str(claims["sub"])[:64]


def _next_path(value: str | None) -> str:
    """Where to return after signing in: a path on this server (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return quote(value, safe="/?=&-_.~%")
    return "/"


def _base_url(request: web.Request, settings: Settings) -> str:
    if settings.public_url is not None:
        return settings.public_url
    scheme = "https" if over_https(request) else "http"
    return f"{scheme}://{request.host}"


def _callback_url(request: web.Request, settings: Settings) -> str:
    return _base_url(request, settings) + "/auth/callback"


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _back(code: str) -> web.Response:
    """To the start page, which says what went wrong in the visitor's language."""
    return _redirect(f"/?error={code}")
