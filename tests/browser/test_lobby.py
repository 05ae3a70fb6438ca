"""The waiting room and the cues around it in real Chromium: the waiting page (own preview,
"waiting for the host", Cancel), a moderator's toasts and chime for someone waiting, a raised
hand and chat while the chat is closed, the "you are muted" hint from the local microphone's
level, reactions drawn as named SVG icons, and axe-core on every page at desktop and phone
sizes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import SIZES, OpenPage, axe_path, page_opener, serious_violations
from tests.browser.test_feedback import (
    IN_VIEW,
    INIT,
    TRACKS_ENDED,
    in_view_at_both_sizes,
    joined,
    strings,
    text,
)
from tests.integration.serverproc import ServerProcess, run_server

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

COUNT_CHIMES = """
window.__chimes = 0;
const startTone = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__chimes += 1;
  return startTone.apply(this, args);
};
"""
"""Before the page's scripts: count the oscillators started (the cue's chime starts two)."""
CHIMES = "() => window.__chimes"
STATUS_IS = "(t) => document.getElementById('status').textContent === t"
TOAST_SHOWN = "(t) => !document.getElementById('toast').hidden && " + STATUS_IS[6:]
"""Page function: the toast is shown with this text."""
FOCUS_IN_TOAST = "() => document.activeElement?.closest('#toast') !== null"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with run_server("--host", "127.0.0.1") as process:
        yield process
        assert process.terminate() == 0


def pages(
    browser: Browser, server: ServerProcess
) -> contextlib.AbstractAsyncContextManager[OpenPage]:
    """Open pages (one context each, devices granted, chimes counted), closed afterwards."""
    return page_opener(browser, server.http, init=INIT + COUNT_CHIMES, bypass_csp=True)


async def _with_lobby(open_page: OpenPage, room: str) -> Page:
    """A host in ``room`` with the waiting room on."""
    host = await open_page(f"/r/{room}?name=Host&join=1&lang=en")
    await joined(host)
    await host.evaluate("() => window.veche.connection.configure({lobby: true})")
    await host.wait_for_function("() => window.veche.connection.settings?.lobby === true")
    return host


async def test_the_waiting_page_shows_a_preview_and_cancel_stops_the_devices(
    browser: Browser, server: ServerProcess
) -> None:
    """Someone waiting sees their own camera playing, "waiting for the host" in their language
    and Cancel, in view on a desktop and a phone; the host gets a toast with Let in and People
    and a chime, without losing the focus; Cancel leaves the lobby, stops every local track and
    says so; the next person waiting is let in from the toast."""
    words = strings("ru")
    async with pages(browser, server) as open_page:
        host = await _with_lobby(open_page, "wait-here")
        guest = await open_page("/r/wait-here?name=Guest&join=1&lang=ru")
        await guest.wait_for_selector("#waiting:not([hidden])", timeout=10_000)
        assert await text(guest, "#waiting-title") == words["waiting.title"]
        assert await text(guest, "#waiting-cancel") == words["waiting.cancel"]
        assert await guest.evaluate("() => document.activeElement.id") == "waiting-cancel"
        await guest.wait_for_function(
            "() => { const v = document.getElementById('waiting-preview');"
            " return v.videoWidth > 0 && !v.paused && v.currentTime > 0; }",
            timeout=10_000,
        )
        played = await guest.evaluate(
            "() => document.getElementById('waiting-preview').currentTime"
        )
        await guest.wait_for_function(
            "(t) => document.getElementById('waiting-preview').currentTime > t + 0.2", arg=played
        )
        await in_view_at_both_sizes(
            guest, ["#waiting-title", "#waiting-preview", "#waiting-cancel"], "waiting-ru"
        )

        await host.wait_for_function(TOAST_SHOWN, arg="Guest is waiting to join (1 waiting).")
        actions = await host.locator("#toast-actions button").all_text_contents()
        assert actions == ["Let in", "People"]
        assert not await host.evaluate(FOCUS_IN_TOAST), "the cue took the focus"
        assert await host.evaluate(CHIMES) == 2

        await guest.click("#waiting-cancel")
        await guest.wait_for_selector("#ended:not([hidden])")
        assert await text(guest, "#ended-title") == words["waiting.cancelled"]
        await guest.wait_for_function(TRACKS_ENDED)
        assert await guest.is_hidden("#waiting")
        await host.wait_for_function("() => window.veche.connection.participants.size === 1")
        await host.wait_for_function("() => document.querySelector('#lobby').hidden")

        ann = await open_page("/r/wait-here?name=Ann&join=1&lang=en")
        await ann.wait_for_selector("#waiting:not([hidden])", timeout=10_000)
        await host.wait_for_function(TOAST_SHOWN, arg="Ann is waiting to join (1 waiting).")
        await host.click("#toast-actions button:text('Let in')")
        await joined(ann)
        assert await ann.is_hidden("#waiting")
        assert await ann.evaluate(
            "() => document.getElementById('waiting-preview').srcObject === null"
        )


async def test_a_moderator_is_cued_for_a_raised_hand_and_chat_while_the_chat_is_closed(
    browser: Browser, server: ServerProcess
) -> None:
    """A moderator gets a toast (focus left alone) and a chime when a hand goes up and when a
    message comes while the chat is closed; with the sound turned off (remembered in this
    browser) the toast still comes but no chime; someone who does not moderate gets neither."""
    async with pages(browser, server) as open_page:
        host = await open_page("/r/cued?name=Host&join=1&lang=en")
        await joined(host)
        student = await open_page("/r/cued?name=Stu&join=1&lang=en")
        await joined(student)
        await host.wait_for_function("() => window.veche.connection.participants.size === 2")
        # The setting, in the Devices menu, is offered to moderators only.
        assert await host.get_attribute("#cue-sound-row", "hidden") is None
        assert await student.get_attribute("#cue-sound-row", "hidden") is not None

        await student.click("#hand")
        await host.wait_for_function(TOAST_SHOWN, arg="Stu raised a hand.")
        assert await host.evaluate(CHIMES) == 2
        assert not await host.evaluate(FOCUS_IN_TOAST)

        # The student moderates nothing: no cue for a moderator's hand.
        await host.click("#hand")
        await student.wait_for_function(
            "() => [...window.veche.connection.participants.values()]"
            ".some(p => p.name === 'Host' && p.hand_raised_at)"
        )
        assert await text(student, "#status") != "Host raised a hand."
        assert await student.evaluate(CHIMES) == 0

        await student.click("#chat-toggle")
        await student.fill("#chat-input", "a question")
        await student.press("#chat-input", "Enter")
        await host.wait_for_function(TOAST_SHOWN, arg="Stu wrote: a question")
        assert await host.evaluate(CHIMES) == 4
        await host.click("#toast-actions button:text('Open chat')")
        assert await host.is_visible("#chat-panel")
        await student.fill("#chat-input", "seen in the open chat")
        await student.press("#chat-input", "Enter")
        await host.locator("#chat-log li", has_text="seen in the open chat").wait_for()
        assert await host.evaluate(CHIMES) == 4, "a chime for chat that is open"
        await host.click("#chat-toggle")

        await host.click(".settings summary")
        await host.uncheck("#cue-sound")
        assert await host.evaluate("() => localStorage.getItem('veche.cue_sound')") == "off"
        await student.click("#hand")
        await student.wait_for_selector("#hand[aria-pressed=false]")
        await student.click("#hand")
        await host.wait_for_function(TOAST_SHOWN, arg="Stu raised a hand.")
        assert await host.evaluate(CHIMES) == 4
        await host.reload()
        await host.wait_for_function("() => window.veche?.ready === true")
        assert not await host.is_checked("#cue-sound")


async def test_speaking_into_a_muted_microphone_shows_the_hint(
    browser: Browser, server: ServerProcess
) -> None:
    """Chromium's fake microphone beeps (-17 to -9 dBFS RMS, twice a second): unmuted, no
    hint; muted with M, "You are muted — press M to unmute" comes within 3 s, in view, while
    nothing of the microphone is sent; dismissed, it does not come back at once."""
    async with pages(browser, server) as open_page:
        page = await open_page("/r/hint?name=Talker&join=1&lang=en")
        await joined(page)
        hint = strings("en")["hint.muted"]
        await page.wait_for_timeout(1500)
        assert await text(page, "#status") != hint
        await page.keyboard.press("m")
        await page.wait_for_function(
            "() => document.getElementById('mic').getAttribute('aria-pressed') === 'false'"
        )
        started = time.monotonic()
        await page.wait_for_function(TOAST_SHOWN, arg=hint, timeout=3000)
        print(f"\nthe muted hint came {time.monotonic() - started:.2f} s after muting")
        assert await page.evaluate(IN_VIEW, "#status")
        sent = await page.evaluate(
            "() => window.veche.connection.publishPc.getSenders()"
            ".filter(s => s.track?.kind === 'audio').length"
        )
        assert sent == 0
        await page.click("#toast-close")
        await page.wait_for_timeout(2000)
        assert await page.is_hidden("#toast")


async def test_reactions_are_named_icons_and_four_quick_ones_all_arrive(
    browser: Browser, server: ServerProcess
) -> None:
    """The reaction buttons hold SVG icons, no emoji text, named in the page's language; four
    clicks within 2 s all reach the other participant (no rate_limited), whose tile shows the
    icon with its name for screen readers; a stream of clicks is refused, with its own words."""
    words = strings("fr")
    keys = ["thumbs_up", "clap", "heart", "laugh", "surprise", "party"]
    async with pages(browser, server) as open_page:
        ada = await open_page("/r/react?name=Ada&join=1&lang=fr")
        await joined(ada)
        bob = await open_page("/r/react?name=Bob&join=1&lang=en")
        await joined(bob)
        await bob.wait_for_selector(".tile:not(.me)")
        buttons = ada.locator(".reactions button")
        assert await buttons.count() == len(keys)
        for index, key in enumerate(keys):
            button = buttons.nth(index)
            assert await button.get_attribute("aria-label") == words[f"reaction.{key}"]
            assert (await button.text_content() or "").strip() == ""
            assert await button.locator("svg.reaction-icon path, svg.reaction-icon circle").count()
        started = time.monotonic()
        for index in range(4):
            await buttons.nth(index).click()
            await ada.wait_for_timeout(300)
        assert time.monotonic() - started < 2
        await bob.wait_for_function(
            "() => window.__heard.filter(h => h.endsWith(':reacted')).length === 4",
            timeout=3000,
        )
        assert not await ada.evaluate("() => window.__heard.some(h => h.endsWith(':error'))")
        badge = bob.locator(".tile:not(.me) .reaction")
        assert await badge.locator("svg.reaction-icon").count() == 1
        assert await badge.locator(".visually-hidden").text_content() == "Laughter"

        # A stream of them is refused, and said so in the page's language.
        for _ in range(6):
            await buttons.nth(5).click()
        await ada.wait_for_function(TOAST_SHOWN, arg=words["reaction.too_many"], timeout=3000)


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_every_page_has_no_serious_accessibility_violation(
    browser: Browser, server: ServerProcess, size: str
) -> None:
    """axe-core finds no serious or critical violation on the landing page, the connectivity
    doctor, the waiting page, in the call with the chat open, and in the people panel of a
    moderator with someone waiting."""
    axe_path()

    async def check(page: Page, where: str) -> None:
        found = await serious_violations(page)
        assert found == [], f"{where} ({size}): {found}"

    async with pages(browser, server) as open_page:
        landing = await open_page("/?lang=fr", size, ready=False)
        await landing.wait_for_load_state("load")
        await check(landing, "landing")
        doctor = await open_page("/doctor?lang=ru", size, ready=False)
        await doctor.wait_for_function(
            "() => document.querySelectorAll('#checks li').length > 0"
            " && !document.querySelector('#checks li[data-status=running]')",
            timeout=30_000,
        )
        await check(doctor, "doctor")

        room = f"axe-lobby-{size}"
        host = await _with_lobby(open_page, room)
        guest = await open_page(f"/r/{room}?name=Guest&join=1&lang=ru", size)
        await guest.wait_for_selector("#waiting:not([hidden])", timeout=10_000)
        await check(guest, "waiting page")

        await host.set_viewport_size(SIZES[size])
        await host.click("#people-toggle")
        await host.wait_for_selector("#lobby:not([hidden])")
        await check(host, "people panel of a moderator, someone waiting")
        await host.keyboard.press("Escape")  # on a phone the sheet covers the toolbar
        await host.wait_for_selector("#people-panel", state="hidden")
        await host.click("#chat-toggle")
        await host.fill("#chat-input", "hello")
        await host.press("#chat-input", "Enter")
        await host.locator("#chat-log li").first.wait_for()
        await check(host, "in the call, chat open")
