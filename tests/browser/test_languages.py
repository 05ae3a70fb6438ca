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
