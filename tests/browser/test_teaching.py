"""Teaching tools in real Chromium: numbered hands and lower all, mute everyone, ask to
unmute, a question to the moderators only, audio only, and a recording's consent notice and
download links."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests.browser.conftest import chromium, meeting_pages
from tests.integration.serverproc import run_server

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"
JS_ME = """() => {
    const c = window.veche?.connection;
    return c?.participantId ? c.participants.get(c.participantId) : undefined;
}"""
"""Page function: this page's participant as the server last described it."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium whose permission prompts are accepted by a fake UI."""
    async with chromium(fake_ui=True) as launched:
        yield launched


async def _in_call(pages: list[Page]) -> None:
    for page in pages:
        await page.wait_for_function(
            "() => window.veche.connection?.participants.size === 3", timeout=30_000
        )


async def test_hands_mute_all_ask_to_unmute_private_question_and_audio_only(
    browser: Browser,
) -> None:
    with run_server("--host", "127.0.0.1", "--admin-token", TOKEN) as server:
        people = [(server.http, "Teacher"), (server.http, "Ann"), (server.http, "Ben")]
        async with meeting_pages(browser, "lesson", people[:1]) as (teacher,):
            await teacher.wait_for_function(f"() => ({JS_ME})()?.role === 'moderator'")
            async with meeting_pages(browser, "lesson", people[1:]) as (ann, ben):
                await _in_call([teacher, ann, ben])
                assert await teacher.is_hidden("#record"), "nothing is recorded on this server"

                await ben.click("#hand")
                await teacher.wait_for_function(
                    "() => [...window.veche.connection.participants.values()]"
                    ".some(p => p.hand_raised_at)"
                )
                await ann.click("#hand")
                await teacher.click("#people-toggle")
                await teacher.wait_for_selector("#people-list .hand-badge >> nth=1")
                badges = await teacher.eval_on_selector_all(
                    "#people-list li",
                    "items => items.map(li => [li.querySelector('.name').textContent,"
                    " li.querySelector('.hand-badge')?.textContent ?? ''])",
                )
                assert badges[:2] == [["Ben", "1"], ["Ann", "2"]]
                await teacher.click("#lower-hands")
                for page in (ann, ben):
                    await page.wait_for_function(f"() => !({JS_ME})().hand_raised_at")

                await teacher.click("#mute-all")
                for page in (ann, ben):
                    await page.wait_for_function(f"() => ({JS_ME})().audio === false")
                    assert await page.get_attribute("#mic", "aria-pressed") == "false"
                assert await teacher.evaluate(f"() => ({JS_ME})().audio") is True

                ann_id = await ann.evaluate("() => window.veche.connection.participantId")
                ask = f'#people-list li[data-participant-id="{ann_id}"] button'
                await teacher.locator(ask, has_text="Ask to unmute").click()
                await ann.wait_for_selector("#toast-actions button", state="visible")
                assert "Teacher asks you to unmute" in (await ann.text_content("#status") or "")
                await ann.click("#toast-actions button")
                await ann.wait_for_function(f"() => ({JS_ME})().audio === true")

                await ben.click("#chat-toggle")
                await ben.select_option("#chat-to", "moderators")
                await ben.fill("#chat-input", "May I leave at noon?")
                await ben.press("#chat-input", "Enter")
                await teacher.click("#chat-toggle")
                await teacher.wait_for_selector("#chat-log li.private")
                meta = await teacher.text_content("#chat-log li.private .meta") or ""
                assert "to the moderators" in meta
                assert await teacher.is_hidden("#chat-to-row")
                await ann.click("#chat-toggle")
                assert await ann.locator("#chat-log li").count() == 0

                ben_id = await ben.evaluate("() => window.veche.connection.participantId")
                assert server.receiving("lesson", ben_id)["video"] == 2
                await ben.click(".settings summary")
                await ben.select_option("#quality", "audio")
                await ben.wait_for_function("() => true")
                for _ in range(40):
                    if server.receiving("lesson", ben_id)["video"] == 0:
                        break
                    await ben.wait_for_timeout(50)
                assert server.receiving("lesson", ben_id)["video"] == 0
                await ben.select_option("#quality", "auto")
                for _ in range(40):
                    if server.receiving("lesson", ben_id)["video"] == 2:
                        break
                    await ben.wait_for_timeout(50)
                assert server.receiving("lesson", ben_id)["video"] == 2


async def test_recording_asks_everyone_to_take_note_and_gives_the_moderator_links(
    browser: Browser, tmp_path: Path
) -> None:
    args = ("--host", "127.0.0.1", "--recording-dir", str(tmp_path), "--recording-anonymous")
    with run_server(*args) as server:
        async with meeting_pages(browser, "taped", [(server.http, "Teacher")]) as (teacher,):
            await teacher.wait_for_function(f"() => ({JS_ME})()?.role === 'moderator'")
            async with meeting_pages(browser, "taped", [(server.http, "Ann")]) as (ann,):
                await ann.wait_for_function(
                    "() => window.veche.connection?.participants.size === 2", timeout=30_000
                )
                assert await teacher.is_visible("#record")
                assert await ann.is_hidden("#record")
                await teacher.click("#record")
                await ann.wait_for_selector("#toast-actions button", state="visible")
                assert await ann.text_content("#status") == "This meeting is now being recorded."
                await ann.click("#toast-actions button")
                assert await ann.is_hidden("#toast")
                await teacher.wait_for_timeout(2000)
                await teacher.click("#record")
                await teacher.wait_for_selector("#toast-actions a", timeout=30_000)
                links = await teacher.eval_on_selector_all(
                    "#toast-actions a", "links => links.map(a => a.getAttribute('href'))"
                )
                assert links
                statuses = await teacher.evaluate(
                    "(links) => Promise.all(links.map(l => fetch(l).then(r => r.status)))", links
                )
                assert statuses == [200] * len(links)
                assert await ann.locator("#toast-actions a").count() == 0


async def test_shortcuts_invite_and_the_tab_title(browser: Browser) -> None:
    """M toggles the microphone, C the chat, ? opens the list of shortcuts (Escape closes it),
    letters typed in the chat are text; Invite copies the meeting's link; a moderator who set
    the password copies a link that carries it in the fragment; unread messages show in the
    tab's title."""
    with run_server("--host", "127.0.0.1") as server:
        context = await browser.new_context(
            permissions=["camera", "microphone", "clipboard-read", "clipboard-write"],
            base_url=server.http,
        )
        try:
            page = await context.new_page()
            await page.goto("/r/keys?name=Kim&join=1&lang=en")
            await page.wait_for_function(f"() => ({JS_ME})()?.role === 'moderator'")
            before = await page.get_attribute("#mic", "aria-pressed")
            await page.keyboard.press("m")
            await page.wait_for_function(
                f"() => document.querySelector('#mic').getAttribute('aria-pressed') !== '{before}'"
            )
            await page.keyboard.press("Shift+?")
            assert await page.evaluate("() => document.querySelector('#shortcuts').open")
            await page.keyboard.press("Escape")
            assert not await page.evaluate("() => document.querySelector('#shortcuts').open")
            await page.keyboard.press("c")
            assert await page.is_visible("#chat-panel")
            await page.fill("#chat-input", "")
            await page.keyboard.type("mvch")
            assert await page.input_value("#chat-input") == "mvch"
            assert await page.get_attribute("#mic", "aria-pressed") != before

            await page.keyboard.press("Escape")  # closes the chat: messages count as unread
            assert await page.is_hidden("#chat-panel")
            async with meeting_pages(browser, "keys", [(server.http, "Guest")]) as (guest,):
                await guest.wait_for_function("() => window.veche.connection?.participantId")
                await guest.evaluate("() => window.veche.connection.chat('hello')")
                await page.wait_for_function("() => document.title === '(1) keys · Veche'")

            await page.click("#invite")
            link = await page.evaluate("() => navigator.clipboard.readText()")
            assert link == f"{server.http}/r/keys"
            await page.click("#people-toggle")
            await page.fill("#set-password", "open sesame")
            await page.click("#password-form button[type=submit]")
            await page.wait_for_selector("#copy-password-link:not([hidden])")
            await page.click("#copy-password-link")
            link = await page.evaluate("() => navigator.clipboard.readText()")
            assert link == f"{server.http}/r/keys#password=open%20sesame"
        finally:
            await context.close()


async def test_shortcuts_work_on_a_cyrillic_keyboard(browser: Browser) -> None:
    """On a Russian layout the M key types "ь": it still toggles the microphone."""
    with run_server("--host", "127.0.0.1") as server:
        context = await browser.new_context(
            permissions=["camera", "microphone"], base_url=server.http, locale="ru-RU"
        )
        try:
            page = await context.new_page()
            await page.goto("/r/keys-ru?name=Иван&join=1&lang=ru")
            await page.wait_for_function(f"() => ({JS_ME})()?.role === 'moderator'")
            before = await page.get_attribute("#mic", "aria-pressed")
            await page.evaluate(
                "() => document.body.dispatchEvent(new KeyboardEvent('keydown',"
                " {key: 'ь', code: 'KeyM', bubbles: true}))"
            )
            await page.wait_for_function(
                f"() => document.querySelector('#mic').getAttribute('aria-pressed') !== '{before}'"
            )
        finally:
            await context.close()
