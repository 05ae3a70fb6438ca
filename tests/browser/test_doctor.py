"""The connectivity doctor in Chromium: against a working server with coturn (UDP, TCP, TLS)
every check passes; with coturn stopped the TURN checks fail and say what to fix."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import chromium
from tests.integration.serverproc import run_server
from tests.integration.test_turn import SECRET, coturn
from veche.tls import self_signed_certificate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed"),
]

CHECKS = ("websocket", "media", "address", "turn_udp", "turn_tcp", "turn_tls")


async def _statuses(page: Page) -> dict[str, str]:
    await page.wait_for_function(
        "() => document.querySelectorAll('#checks li[data-status]:not([data-status=running])')"
        f".length === {len(CHECKS)}",
        timeout=45_000,
    )
    items = page.locator("#checks li")
    return {
        str(await items.nth(i).get_attribute("data-check")): str(
            await items.nth(i).get_attribute("data-status")
        )
        for i in range(await items.count())
    }


async def test_doctor_passes_then_explains_a_stopped_turn() -> None:
    """The test's coturn has a self-signed certificate: Chromium verifies TURN-over-TLS
    certificates, so this browser is told to accept it."""
    async with chromium(extra_args=("--ignore-certificate-errors",)) as browser:
        await _check(browser)


async def _check(browser: Browser) -> None:
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        cert_pem, key_pem, _ = self_signed_certificate(["127.0.0.1", "localhost"])
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        turn_args = ("-c", "/dev/null", "--no-cli", "--use-auth-secret", "--realm=veche.test")
        turn_stack = contextlib.ExitStack()
        turn = turn_stack.enter_context(coturn(*turn_args, tls=(cert, key)))
        stack.push(turn_stack)
        urls = ",".join(
            (
                f"turn:127.0.0.1:{turn.port}?transport=udp",
                f"turn:127.0.0.1:{turn.port}?transport=tcp",
                f"turns:localhost:{turn.tls_port}?transport=tcp",
            )
        )
        server = stack.enter_context(run_server("--ice-servers", urls, "--turn-secret", SECRET))
        context = await browser.new_context(base_url=server.http)
        try:
            page = await context.new_page()
            await page.goto("/doctor?lang=en")
            statuses = await _statuses(page)
            assert statuses == dict.fromkeys(CHECKS, "pass"), statuses
            assert await page.text_content("#summary") == (
                "Everything works: meetings will connect from this network."
            )

            turn_stack.close()  # coturn stops; Veche goes on
            await page.goto("/doctor?lang=en")
            statuses = await _statuses(page)
            assert statuses == {
                **dict.fromkeys(("websocket", "media", "address"), "pass"),
                **dict.fromkeys(("turn_udp", "turn_tcp", "turn_tls"), "fail"),
            }, statuses
            explanation = await page.text_content('#checks li[data-check="turn_udp"] .explain')
            assert explanation is not None
            assert "Check that coturn runs" in explanation
            assert "3 check(s) failed" in str(await page.text_content("#summary"))
            await page.goto("/doctor?lang=ru")
            await _statuses(page)
            assert "coturn запущен" in str(
                await page.text_content('#checks li[data-check="turn_udp"] .explain')
            )
        finally:
            await context.close()
