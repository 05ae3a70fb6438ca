"""The meeting page's language choice in real Chromium, against the real server."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser

from tests.integration.serverproc import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


@pytest.mark.parametrize("lang", ["__proto__", "constructor"])
async def test_room_page_with_an_inherited_property_as_language_falls_back_to_english(
    browser: Browser, server: ServerProcess, lang: str
) -> None:
    """A ``?lang=`` naming a property every object inherits is no language: the page starts in
    English, its language switcher filled, without a script error."""
    context = await browser.new_context(base_url=server.http)
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"/r/x?lang={lang}")
        # The switcher is filled only once the page's script has loaded its translations.
        await page.wait_for_function(
            "() => document.querySelectorAll('#lang option').length > 0", timeout=10000
        )
        assert await page.locator("#lang").input_value() == "en"
        assert await page.locator("#prejoin-title").text_content() == "Ready to join?"
        assert await page.evaluate("document.documentElement.lang") == "en"
        assert errors == []
    finally:
        await context.close()


@pytest.mark.parametrize(
    ("lang", "words"), [("en", "letters, digits"), ("ru", "буквы"), ("fr", "lettres")]
)
async def test_a_bad_room_url_gets_the_start_page_in_the_visitors_language(
    browser: Browser, server: ServerProcess, lang: str, words: str
) -> None:
    """``/r/<not a meeting name>`` answers 404 with the styled start page, which says in the
    visitor's language what a meeting name may hold."""
    context = await browser.new_context(base_url=server.http, locale=lang)
    try:
        page = await context.new_page()
        response = await page.goto("/r/a%20b")
        assert response is not None
        assert response.status == 404
        await page.wait_for_selector("#form-error:not([hidden])", timeout=10000)
        assert words in (await page.text_content("#form-error") or "")
    finally:
        await context.close()
