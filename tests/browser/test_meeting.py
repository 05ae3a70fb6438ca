"""Meeting features in real Chromium: chat, screen sharing, lobby and moderation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Dialog, Page

from tests.browser.conftest import chromium
from tests.integration.serverproc import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

XSS = "<img src=x onerror=alert(1)> hello"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium whose permission prompts are accepted by a fake UI, which also makes
    getDisplayMedia share a synthetic screen."""
    async with chromium(fake_ui=True) as launched:
        yield launched


async def _join(
    browser: Browser, server: ServerProcess, room: str, name: str, contexts: list[BrowserContext]
) -> Page:
    context = await browser.new_context(base_url=server.http)
    contexts.append(context)
    page = await context.new_page()
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs  # type: ignore[attr-defined]
    await page.goto(f"/r/{room}?name={name}&join=1&lang=en")
    return page


async def test_chat_is_plain_text_with_unread_counter(
    browser: Browser, server: ServerProcess
) -> None:
    """A message carrying markup shows as text on the other side, never as an element, and
    counts as unread until the chat is opened."""
    contexts: list[BrowserContext] = []
    try:
        ada = await _join(browser, server, "chatroom", "Ada", contexts)
        bob = await _join(browser, server, "chatroom", "Bob", contexts)
        await bob.wait_for_selector(".tile:not(.me)", timeout=15000)
        await ada.click("#chat-toggle")
        await ada.fill("#chat-input", XSS)
        await ada.press("#chat-input", "Enter")
        await bob.wait_for_function("() => document.getElementById('unread').textContent === '1'")
        assert await bob.is_visible("#unread")
        await bob.click("#chat-toggle")
        text = bob.locator("#chat-log li .text")
        await text.wait_for()
        assert await text.text_content() == XSS
        assert await bob.locator("#chat-log img").count() == 0
        assert not await bob.is_visible("#unread")
        await bob.fill("#chat-input", "bonjour")
        await bob.click("#chat-form button")
        await ada.wait_for_function(
            "() => [...document.querySelectorAll('#chat-log .text')].map(e => e.textContent)"
            ".includes('bonjour')"
        )
        assert ada.dialogs == []
        assert bob.dialogs == []
    finally:
        for context in contexts:
            await context.close()


async def test_screen_share_plays_for_the_others(browser: Browser, server: ServerProcess) -> None:
    """One shares a screen: the other sees it large and playing; stopping removes it."""
    contexts: list[BrowserContext] = []
    try:
        ada = await _join(browser, server, "screens", "Ada", contexts)
        bob = await _join(browser, server, "screens", "Bob", contexts)
        await ada.wait_for_selector(".tile:not(.me)", timeout=15000)
        await ada.click("#screen")
        await bob.wait_for_function(
            "() => { const v = document.getElementById('stage-video');"
            " return !document.getElementById('stage').hidden && v.videoWidth >= 1280; }",
            timeout=15000,
        )
        frames = (
            "() => document.getElementById('stage-video')"
            ".getVideoPlaybackQuality().totalVideoFrames"
        )
        first = await bob.evaluate(frames)
        await bob.wait_for_function(f"() => ({frames})() > {first + 10}", timeout=10000)
        assert await ada.get_attribute("#screen", "aria-pressed") == "true"
        await ada.click("#screen")
        await bob.wait_for_function("() => document.getElementById('stage').hidden", timeout=5000)
        # Sharing again, then the browser's own "stop sharing" ends the track.
        await ada.click("#screen")
        await bob.wait_for_function("() => !document.getElementById('stage').hidden", timeout=10000)
        # Bob may see the share before Ada's client has finished starting it.
        await ada.wait_for_selector("#screen[aria-pressed='true']", timeout=5000)
        await ada.evaluate(
            "() => window.veche.connection.tracks.screen.dispatchEvent(new Event('ended'))"
        )
        await bob.wait_for_function("() => document.getElementById('stage').hidden", timeout=5000)
        assert await ada.get_attribute("#screen", "aria-pressed") == "false"
    finally:
        for context in contexts:
            await context.close()


async def test_moderator_admits_from_lobby_then_mutes(
    browser: Browser, server: ServerProcess
) -> None:
    """The host turns the waiting room on; a newcomer waits until admitted, then the host mutes
    them and every tile of theirs shows it."""
    contexts: list[BrowserContext] = []
    try:
        host = await _join(browser, server, "guarded-lobby", "Host", contexts)
        bob = await _join(browser, server, "guarded-lobby", "Bob", contexts)
        await host.wait_for_selector(".tile:not(.me)", timeout=15000)
        await host.click("#people-toggle")
        await host.check("#set-lobby")
        await bob.wait_for_function("() => window.veche.connection.settings?.lobby === true")

        cyd = await _join(browser, server, "guarded-lobby", "Cyd", contexts)
        await cyd.wait_for_selector("#waiting:not([hidden])")
        assert await cyd.text_content("#waiting-title") == "Waiting for the host to let you in"
        assert await cyd.locator(".tile").count() == 0
        admit = host.locator("#lobby-list button", has_text="Admit")
        await admit.wait_for(timeout=5000)
        assert await host.locator("#lobby-list .name").text_content() == "Cyd"
        await admit.click()
        await cyd.wait_for_selector(".tile.me", timeout=10000)
        await cyd.wait_for_function(
            "() => [...document.querySelectorAll('.tile:not(.me) video')]"
            ".filter(v => v.videoWidth > 0).length >= 2",
            timeout=30000,  # three browsers each encoding simulcast share two cores
        )

        cyd_row = host.locator("#people-list li", has_text="Cyd")
        await cyd_row.locator("button", has_text="Mute").click()
        for page in (host, bob):
            tile = page.locator(".tile", has_text="Cyd")
            await tile.locator(".mic-off").wait_for(state="visible", timeout=5000)
            assert await tile.get_attribute("data-audio") == "false"
        await cyd.wait_for_function(
            "() => document.getElementById('mic').getAttribute('aria-pressed') === 'false'"
        )
        assert "muted by the moderator" in (await cyd.locator("#muted-banner").text_content() or "")
    finally:
        for context in contexts:
            await context.close()
