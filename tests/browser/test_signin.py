"""Sign-in in real Chromium against a real OpenID provider process: the staff member clicks
"Sign in" on the pre-join page, types its subject into the provider's login form, comes back
signed in with the provider's name, and hosts; a guest who came first waits ("The meeting
starts when the host joins") and enters by itself when the host arrives; the participant
list marks the host as signed in and the other as a guest; axe-core finds nothing serious on
the pages with the sign-in controls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import chromium, serious_violations
from tests.integration.oidcproc import ProviderProcess, run_provider
from tests.integration.serverproc import ServerProcess, run_server

pytestmark = pytest.mark.slow

VISIBLE = "(id) => { const e = document.getElementById(id); return e && !e.hidden; }"


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderProcess]:
    with run_provider() as started:
        yield started


@pytest.fixture(scope="module")
def oidc_server(provider: ProviderProcess) -> Iterator[ServerProcess]:
    env = {
        "VECHE_OIDC_ISSUER": provider.issuer,
        "VECHE_OIDC_CLIENT_ID": "veche-browser-test",
        "VECHE_OIDC_CLIENT_SECRET": "veche-browser-test-secret",
        "VECHE_SESSION_SECRET": "a-session-secret-shared-by-every-node-0123",
        "VECHE_OIDC_HOSTS": "groups=staff",
        "VECHE_OIDC_GUESTS": "host-first",
    }
    with run_server("--host", "127.0.0.1", env=env) as process:
        yield process
        assert process.terminate() == 0


async def test_the_host_signs_in_on_the_login_page_and_the_waiting_guest_enters(
    oidc_server: ServerProcess,
) -> None:
    """The whole sign-in as a person does it, and host-first as both people see it."""
    async with chromium() as browser:
        guest_context = await browser.new_context(
            permissions=["camera", "microphone"], base_url=oidc_server.http, bypass_csp=True
        )
        host_context = await browser.new_context(
            permissions=["camera", "microphone"], base_url=oidc_server.http, bypass_csp=True
        )
        try:
            guest = await guest_context.new_page()
            await guest.goto("/r/lecture-hall?name=Gina%20Guest&join=1&lang=en")
            await guest.wait_for_function(VISIBLE, arg="waiting")
            title = guest.locator("#waiting-title")
            assert await title.text_content() == "The meeting starts when the host joins"
            assert await serious_violations(guest) == []

            host = await host_context.new_page()
            await host.goto("/r/lecture-hall?lang=en")
            await host.wait_for_function("() => window.veche?.ready === true")
            sign_in = host.locator("#sign-in")
            assert await sign_in.text_content() == "Sign in"
            assert await serious_violations(host) == []
            await sign_in.click()
            # The provider's own login page: a real form on another origin.
            await host.wait_for_url(f"{oidc_server.http.rsplit(':', 1)[0]}:*/oauth2/authorize*")
            await host.fill("input[name=sub]", "teacher")
            await host.get_by_role("button", name="Authorize").click()
            await host.wait_for_url(f"{oidc_server.http}/r/lecture-hall")
            await host.wait_for_function("() => window.veche?.ready === true")
            assert await host.locator("#signed-in-as").text_content() == (
                "Signed in as Tereza Teacher"
            )
            assert await host.locator("#display-name").input_value() == "Tereza Teacher"
            assert await host.locator("#sign-out").is_visible()
            assert await serious_violations(host) == []
            await host.locator("#join").click()
            await host.wait_for_function(VISIBLE, arg="meeting")

            # The guest enters by itself, without anyone admitting it.
            await guest.wait_for_function(VISIBLE, arg="meeting")
            # The host heard that the guest was waiting; once let in, that cue is gone.
            await host.wait_for_function("() => document.getElementById('toast').hidden")
            await host.wait_for_selector("#people-list .badge.guest", state="attached")
            marks = await host.evaluate(
                """() => [...document.querySelectorAll('#people-list li')].map((li) => [
                    li.textContent.includes('Tereza Teacher') ? 'host' :
                    li.textContent.includes('Gina Guest') ? 'guest' : '?',
                    li.querySelector('.badge.signed-in, .badge.guest')?.textContent])"""
            )
            assert sorted(marks) == [["guest", "guest"], ["host", "signed in"]]

            # The start page, in French: still signed in, and an unreachable provider worded.
            landing = await host_context.new_page()
            await landing.goto("/?error=signin_unavailable&lang=fr")
            await landing.wait_for_function(VISIBLE, arg="form-error")
            assert (await landing.locator("#form-error").text_content() or "").startswith(
                "Le service de connexion est injoignable"
            )
            assert await landing.locator("#signed-in-as").text_content() == (
                "Connecté en tant que Tereza Teacher"
            )
        finally:
            await guest_context.close()
            await host_context.close()
