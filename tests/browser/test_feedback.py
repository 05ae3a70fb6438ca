"""The room page's feedback area, password flow, after-leave screen and keyboard use in real
browsers: each state's message is in view at desktop and phone sizes, in English, Russian and
French; a refused join is retried at once; leaving stops the camera and microphone."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import SIZES, OpenPage, axe_path, page_opener, serious_violations
from tests.browser.firefox import FirefoxPage, firefox, firefox_missing
from tests.integration.serverproc import ServerProcess, run_server
from veche.assets import web_root

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("VECHE_SCREENSHOTS")
"""A folder to save screenshots of each state in (for a person to look at), if set."""

INIT = """
window.__tracks = [];
const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = async (constraints) => {
  const stream = await gum(constraints);
  window.__tracks.push(...stream.getTracks());
  return stream;
};
window.__sockets = [];
window.__heard = [];
window.__blockSockets = false;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(url, protocols) {
    super(window.__blockSockets ? url.replace("/ws?", "/no-such-socket?") : url, protocols);
    window.__sockets.push(this);
    const n = window.__sockets.length;
    this.addEventListener("message", (e) => window.__heard.push(`${n}:${JSON.parse(e.data).type}`));
    this.addEventListener("close", (e) => window.__heard.push(`${n}:close ${e.code}`));
  }
};
"""
"""Before the page's scripts: keep every local track, and let a test cut the signalling (new
sockets then go to a path that is no WebSocket, so the client keeps reconnecting until let
through)."""

IN_VIEW = """(selector) => {
  const el = document.querySelector(selector);
  if (!el || el.closest("[hidden]")) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0
    && r.bottom <= innerHeight && r.right <= innerWidth;
}"""
"""Page function: the element is shown and wholly inside the viewport."""

CUT = """() => {
  window.__blockSockets = true;
  window.__sockets.at(-1).dispatchEvent(new CloseEvent("close", {code: 1006}));
}"""
"""Page function: the signalling socket drops (as a network loss would) and stays unreachable."""
TRACKS_ENDED = (
    "() => window.__tracks.length > 0 && window.__tracks.every(t => t.readyState === 'ended')"
)
MY_ID = "() => window.veche.connection?.participantId ?? null"


def strings(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((web_root() / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Rooms of at most two, so that a third person is turned away; no state kept from before."""
    env = {"VECHE_MAX_PARTICIPANTS": "2", "VECHE_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    with run_server("--host", "127.0.0.1", env=env) as process:
        yield process
        assert process.terminate() == 0


def people(
    browser: Browser, server: ServerProcess
) -> contextlib.AbstractAsyncContextManager[OpenPage]:
    """Open pages (one context each, errors recorded), all closed afterwards."""
    return page_opener(browser, server.http, init=INIT)


async def in_view_at_both_sizes(page: Any, selectors: list[str], shot: str = "") -> None:
    """Each selector is wholly in view at 1280x800 and at 390x844, the page scrolled to its
    top; the page is left at desktop size."""
    for turn, size in enumerate(("desktop", "phone", "desktop")):
        await page.set_viewport_size(SIZES[size])
        await page.evaluate("() => window.scrollTo(0, 0)")
        for selector in selectors:
            assert await page.evaluate(IN_VIEW, selector), f"{selector} not in view ({size})"
        if SHOTS and shot and turn < 2:
            Path(SHOTS).mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=f"{SHOTS}/{shot}-{size}.png")


async def text(page: Any, selector: str) -> str:
    value: str = await page.evaluate("(s) => document.querySelector(s).textContent", selector)
    return value


async def joined(page: Any) -> None:
    await page.wait_for_function("() => !document.getElementById('meeting').hidden", timeout=15000)


@pytest.mark.parametrize("lang", ["en", "ru", "fr"])
async def test_every_state_is_said_in_view_in_the_page_language(
    browser: Browser, server: ServerProcess, lang: str
) -> None:
    """A password refusal, a wrong password, a full room, a moderator's mute, a moderator-only
    action, one's own reconnection, removal, leaving and the meeting's end: each is worded in
    the page's language and shown inside the viewport on a desktop and a phone; the retry with
    the right password joins within 1 s of the click; every ending stops every local track."""
    words = strings(lang)
    room = f"feedback-{lang}"
    async with people(browser, server) as open_page:
        host = await open_page(f"/r/{room}?name=Host&join=1&lang=en")
        await joined(host)
        await host.evaluate("() => window.veche.connection.configure({password: 'sesame'})")
        await host.wait_for_function("() => window.veche.connection.settings?.has_password")

        # Pre-join: no password, then a wrong one, then the right one at once.
        guest = await open_page(f"/r/{room}?name=Guest&lang={lang}")
        await guest.click("#join")
        await guest.wait_for_selector("#password-row:not([hidden])")
        assert await text(guest, "#status") == words["error.room_unavailable"]
        await in_view_at_both_sizes(
            guest, ["#status", "#room-password", "#join"], f"prejoin-{lang}"
        )
        await guest.fill("#room-password", "wrong")
        await guest.click("#join")
        await guest.wait_for_function(
            "(t) => document.getElementById('status').textContent === t",
            arg=words["error.room_unavailable_password"],
        )
        await guest.fill("#room-password", "sesame")
        started = time.monotonic()
        await guest.click("#join")
        await joined(guest)
        retry = time.monotonic() - started
        print(f"\n{lang}: joined {retry * 1000:.0f} ms after the second click")
        assert retry < 1.0
        assert await guest.evaluate("() => document.activeElement.id") == "mic"

        # A full room (two at most here).
        third = await open_page(f"/r/{room}?name=Third&lang={lang}#password=sesame")
        await third.click("#join")
        await third.wait_for_function(
            "(t) => document.getElementById('status').textContent === t",
            arg=words["error.room_full"],
        )
        await in_view_at_both_sizes(third, ["#status", "#join"])

        # In the call: muted by the moderator (a banner while it lasts).
        guest_id = await guest.evaluate(MY_ID)
        await host.evaluate("(id) => window.veche.connection.moderate('mute', id)", guest_id)
        await guest.wait_for_selector("#muted-banner:not([hidden])")
        assert await text(guest, "#muted-banner") == words["banner.muted"]
        await in_view_at_both_sizes(guest, ["#muted-banner"], f"call-muted-{lang}")

        # A moderator-only action: the error is worded from its code, never the server's text.
        await guest.evaluate("() => window.veche.connection.configure({locked: true})")
        await guest.wait_for_function(
            "(t) => document.getElementById('status').textContent === t",
            arg=words["error.forbidden"],
        )
        await in_view_at_both_sizes(guest, ["#status"])

        # One's own reconnection: a banner while it lasts, gone once back.
        await guest.evaluate(CUT)
        await guest.wait_for_selector("#reconnecting-banner:not([hidden])")
        assert await text(guest, "#reconnecting-banner") == words["status.reconnecting"]
        await in_view_at_both_sizes(guest, ["#reconnecting-banner"], f"call-reconnecting-{lang}")
        await guest.evaluate("() => { window.__blockSockets = false; }")
        await guest.wait_for_selector("#reconnecting-banner[hidden]", state="attached")

        # Removed: the devices stop, the reason shows, Rejoin has the focus.
        guest_id = await guest.evaluate(MY_ID)
        await host.evaluate("(id) => window.veche.connection.moderate('remove', id)", guest_id)
        await guest.wait_for_selector("#ended:not([hidden])")
        assert await text(guest, "#ended-title") == words["goodbye.removed"], await guest.evaluate(
            "() => window.__heard.join()"
        )
        await guest.wait_for_function(TRACKS_ENDED)
        assert await guest.evaluate("() => document.activeElement.id") == "rejoin"
        await in_view_at_both_sizes(guest, ["#ended-title", "#rejoin", "#close-page"])

        # Leaving: the same screen; Rejoin comes back with live devices.
        await third.click("#join")
        await joined(third)
        await third.click("#leave")
        await third.wait_for_selector("#ended:not([hidden])")
        assert await text(third, "#ended-title") == words["status.left"]
        await third.wait_for_function(TRACKS_ENDED)
        await in_view_at_both_sizes(third, ["#ended-title", "#rejoin"], f"left-{lang}")
        await third.click("#rejoin")
        await joined(third)
        live = "() => window.__tracks.filter(t => t.readyState === 'live').length"
        assert await third.evaluate(live) >= 1

        # The meeting's end.
        await host.evaluate("() => window.veche.connection.endMeeting()")
        await third.wait_for_selector("#ended:not([hidden])")
        assert await text(third, "#ended-title") == words["goodbye.ended"], await third.evaluate(
            "() => window.__heard.join()"
        )
        await third.wait_for_function(TRACKS_ENDED)
        await in_view_at_both_sizes(third, ["#ended-title", "#rejoin"])


async def test_a_keyboard_alone_joins_toggles_chats_and_leaves(
    browser: Browser, server: ServerProcess
) -> None:
    """With the keyboard only: Enter joins and the focus lands on the controls; Space toggles
    the microphone and camera; the chat opens, sends, and closes with Escape; Leave moves the
    focus to Rejoin. Every control shows a 3 px focus ring."""
    async with people(browser, server) as open_page:
        page = await open_page("/r/keyboard?name=Kay&lang=en")
        keys = page.keyboard

        async def tab_to(element_id: str) -> None:
            for _ in range(40):
                if await page.evaluate("() => document.activeElement?.id") == element_id:
                    ring = await page.evaluate(
                        "() => getComputedStyle(document.activeElement).outlineWidth"
                    )
                    assert ring == "3px", f"#{element_id} focus ring is {ring}"
                    return
                await keys.press("Tab")
            raise AssertionError(f"Tab never reached #{element_id}")

        await page.wait_for_function("() => document.activeElement.id === 'display-name'")
        await keys.press("Enter")
        await joined(page)
        assert await page.evaluate("() => document.activeElement.id") == "mic"
        await keys.press("Tab")
        await page.keyboard.press("Shift+Tab")
        await tab_to("mic")
        await keys.press("Space")
        await page.wait_for_function("() => mic.getAttribute('aria-pressed') === 'false'")
        await tab_to("cam")
        await keys.press("Space")
        await page.wait_for_function("() => cam.getAttribute('aria-pressed') === 'false'")
        await tab_to("hand")
        await keys.press("Tab")
        ring = await page.evaluate("() => getComputedStyle(document.activeElement).outlineWidth")
        assert ring == "3px", "a reaction's focus ring"
        label = await page.evaluate("() => document.activeElement.getAttribute('aria-label')")
        assert label == "Thumbs up"
        await tab_to("chat-toggle")
        await keys.press("Enter")
        await page.wait_for_function("() => document.activeElement.id === 'chat-input'")
        await keys.type("hello by keyboard")
        await keys.press("Enter")
        await page.wait_for_function(
            "() => document.getElementById('chat-log').textContent.includes('hello by keyboard')"
        )
        await keys.press("Escape")
        await page.wait_for_selector("#chat-panel[hidden]", state="attached")
        assert await page.evaluate("() => document.activeElement.id") == "chat-toggle"
        await tab_to("leave")
        await keys.press("Enter")
        await page.wait_for_selector("#ended:not([hidden])")
        assert await page.evaluate("() => document.activeElement.id") == "rejoin"
        await page.wait_for_function(TRACKS_ENDED)


async def test_firefox_retries_a_password_at_once_and_leaving_stops_its_devices(
    server: ServerProcess, browser: Browser
) -> None:
    """In Firefox (French): an invite link's #password fragment is read and taken out of the
    address bar; without it the refusal is in view at both sizes and the retry joins within
    1 s of the click; leaving stops every local track and shows Rejoin in view."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    words = strings("fr")
    async with people(browser, server) as open_page, firefox() as fox:
        host = await open_page("/r/fox?name=Host&join=1&lang=en")
        await joined(host)
        await host.evaluate("() => window.veche.connection.configure({password: 'renard'})")
        await host.wait_for_function("() => window.veche.connection.settings?.has_password")

        page: FirefoxPage = await fox.new_page(server.http)
        await page.add_init_script(INIT)
        await page.goto("/r/fox?name=Guest&lang=fr#password=renard")
        await page.wait_for_function("() => window.veche?.ready === true")
        assert await page.evaluate("() => location.hash") == ""
        assert await page.evaluate("() => document.getElementById('room-password').value") == (
            "renard"
        )
        await page.fill("#room-password", "faux")
        await page.click("#join")
        await page.wait_for_function(
            "(t) => document.getElementById('status').textContent === t",
            arg=words["error.room_unavailable_password"],
        )
        await in_view_at_both_sizes(page, ["#status", "#room-password", "#join"])
        await page.fill("#room-password", "renard")
        started = time.monotonic()
        await page.click("#join")
        await joined(page)
        retry = time.monotonic() - started
        print(f"\nFirefox joined {retry * 1000:.0f} ms after the second click")
        assert retry < 1.0
        await page.click("#leave")
        await page.wait_for_function(TRACKS_ENDED)
        assert await text(page, "#ended-title") == words["status.left"]
        await in_view_at_both_sizes(page, ["#ended-title", "#rejoin"])
        await page.close()


@pytest.mark.parametrize("size", ["desktop", "phone"])
async def test_the_room_page_has_no_serious_accessibility_violation(
    browser: Browser, server: ServerProcess, size: str
) -> None:
    """axe-core finds no serious or critical violation on the pre-join screen (after a
    refusal), in the call (a moderator, with a banner) and after leaving."""
    axe_path()

    async def check(page: Page, where: str) -> None:
        found = await serious_violations(page)
        assert found == [], f"{where} ({size}): {found}"

    async with people(browser, server) as open_page:
        host = await open_page(f"/r/axe-{size}?name=Host&join=1&lang=en", size, bypass_csp=True)
        await joined(host)
        await host.evaluate("() => window.veche.connection.configure({password: 'x'})")
        await host.wait_for_function("() => window.veche.connection.settings?.has_password")
        await host.click("#people-toggle")
        await check(host, "in the call")
        guest = await open_page(f"/r/axe-{size}?name=Guest&lang=ru", size, bypass_csp=True)
        await guest.click("#join")
        await guest.wait_for_selector("#password-row:not([hidden])")
        await check(guest, "pre-join after a refusal")
        await host.keyboard.press("Escape")  # on a phone the people sheet covers the toolbar
        await host.click("#leave")
        await host.wait_for_selector("#ended:not([hidden])")
        await check(host, "after leaving")
