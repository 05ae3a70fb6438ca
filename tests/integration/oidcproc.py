"""A real OpenID Connect provider for sign-in tests: PyPI's ``oidc-provider-mock`` (a Flask
app under uvicorn with a real login form where one types the subject) started as its own
process on a free loopback port, stopped by PID; and a helper that signs in through it as a
browser would, following redirects and posting the provider's form."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import aiohttp
from yarl import URL

from .serverproc import free_port, stop

USERS: tuple[dict[str, Any], ...] = (
    {"sub": "teacher", "name": "Tereza Teacher", "groups": ["staff", "physics"]},
    {"sub": "student", "name": "Stepan Student", "groups": ["students"]},
)
"""The provider's predefined people: a member of staff and a student (not staff)."""


@dataclass
class ProviderProcess:
    process: subprocess.Popen[str]
    port: int
    log: IO[str]

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@contextlib.contextmanager
def run_provider(*, token_max_age: int = 600) -> Iterator[ProviderProcess]:
    """``python -m oidc_provider_mock`` on a free port, nonce required, the :data:`USERS`
    predefined; ready once its discovery document answers."""
    port = free_port()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oidc_provider_mock",
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--require-nonce", "true", "--token-max-age", str(token_max_age)),
                *(arg for user in USERS for arg in ("--user-claims", json.dumps(user))),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        provider = ProviderProcess(process, port, log)
        try:
            _wait_ready(provider)
            yield provider
        finally:
            stop(process, grace=5)


def _wait_ready(provider: ProviderProcess) -> None:
    deadline = time.monotonic() + 30
    url = provider.issuer + "/.well-known/openid-configuration"
    while True:
        if provider.process.poll() is not None:
            raise RuntimeError(f"the provider exited early:\n{provider.output()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def session() -> aiohttp.ClientSession:
    """A browser-like HTTP client: it keeps cookies for IP hosts too."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    http: aiohttp.ClientSession, base: str, subject: str, next_path: str = "/"
) -> str:
    """Sign in at ``base`` (Veche's URL) as ``subject``: Veche sends the browser to the
    provider's login page, the form is posted with the subject, the provider sends the browser
    back to Veche's callback. The URL the browser ends on."""
    async with http.get(base + "/auth/login", params={"next": next_path}) as page:
        assert page.status == 200, await page.text()
        assert "Authorize" in await page.text(), "not the provider's login page"
        login_url = page.url
    async with http.post(login_url, data={"sub": subject}) as landed:
        assert landed.status == 200, await landed.text()
        return str(landed.url)


def cookie_header(http: aiohttp.ClientSession, url: str) -> str:
    """The ``Cookie`` header the browser would send to ``url``."""
    cookies = http.cookie_jar.filter_cookies(URL(url))
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
