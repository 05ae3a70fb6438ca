"""The call screen on a phone (390x844, touch) and its extras on a desktop, in real Chromium
with aiortc publishers: a one-row toolbar whose More menu holds the rest, chat and people as
sheets over the whole screen, 4:3 video never cropped, no screen sharing where the browser
cannot share, the speaker chosen for every remote sound, picture-in-picture that follows the
active speaker; axe-core on the phone's menu and chat sheet; the phone layout in Firefox."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import axe_path, serious_violations
from tests.browser.firefox import firefox, firefox_missing
from tests.integration.peers import MediaClient, SlideTrack
from tests.integration.serverproc import ServerProcess, run_server
from tests.integration.waiting import until
from veche.assets import web_root

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

TOKEN = "admin-token-0123456789abcdef-0123456"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
ROOT = Path(__file__).resolve().parents[2]
SHOTS = os.environ.get("VECHE_SCREENSHOTS")
"""A folder to save screenshots in (for a person to look at), if set."""

NO_DISPLAY_MEDIA = "delete MediaDevices.prototype.getDisplayMedia;"
"""Before the page's scripts: a browser that cannot share its screen, as on a phone."""

JS_IN_VIEW = """(el) => {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0
    && r.bottom <= innerHeight + 0.5 && r.right <= innerWidth + 0.5;
}"""
"""Element function: shown and wholly inside the viewport."""

JS_TOOLBAR = """() => {
  const bar = document.querySelector('.controls').getBoundingClientRect();
  const buttons = [...document.querySelectorAll('.controls > button')].filter(b => !b.hidden);
  return {height: bar.height, bottom: bar.bottom, ids: buttons.map(b => b.id),
    tops: buttons.map(b => Math.round(b.getBoundingClientRect().top)),
    inView: buttons.every(b => { const r = b.getBoundingClientRect();
      return r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; })};
}"""
"""Page function: the toolbar's box and its direct buttons' ids and tops."""

JS_MENU_ITEMS = """() => [...document.querySelectorAll(
    '#more-menu button, #more-menu summary, #more-menu select')]
  .filter(el => el.checkVisibility())
  .map(el => { const r = el.getBoundingClientRect();
    return {id: el.id || el.getAttribute('aria-label') || el.textContent.trim(),
      inView: r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth}; })"""
"""Page function: the More menu's visible controls, each with whether it is in view."""

JS_FOCUSED = """() => { const el = document.activeElement;
  return el.id || el.getAttribute('aria-label') || el.textContent.trim(); }"""

JS_PICTURE = """(tile) => {
  const video = tile.querySelector('video');
  const box = video.getBoundingClientRect();
  const frame = tile.getBoundingClientRect();
  const fit = getComputedStyle(video).objectFit;
  const vw = video.videoWidth, vh = video.videoHeight;
  const scale = fit === 'cover' ? Math.max(box.width / vw, box.height / vh)
    : Math.min(box.width / vw, box.height / vh);
  return {fit, vw, vh, pictureWidth: vw * scale, pictureHeight: vh * scale,
    box: [box.left, box.top, box.right, box.bottom],
    frame: [frame.left, frame.top, frame.right, frame.bottom]};
}"""
"""Element function: a tile's video, the size its picture is drawn at and the boxes around it."""

JS_HIDE_TAB = """() => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
  document.dispatchEvent(new Event('visibilitychange'));
}"""
"""Page function: make the page believe its tab was hidden."""


def strings(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((web_root() / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def speak(client: MediaClient, loud: bool) -> None:
    """Make ``client``'s microphone loud (or silent again)."""
    (sender,) = [s for s in client.publish_pc.getSenders() if s.track and s.track.kind == "audio"]
    sender.track.amplitude = 8000 if loud else 0  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"VECHE_DATA_DIR": str(tmp_path_factory.mktemp("data"))}
    with run_server("--host", "127.0.0.1", "--admin-token", TOKEN, env=env) as process:
        yield process
        assert process.terminate() == 0


@contextlib.asynccontextmanager
async def publishers(
    server: ServerProcess, room: str, count: int, *, small: bool = False
) -> AsyncIterator[list[Any]]:
    """``count`` aiortc participants publishing silent sound and 640x480 (4:3) video, or with
    ``small`` a 64x48 slide (cheap to encode when several publish)."""
    joined: list[MediaClient] = []
    try:
        for n in range(count):
            client = await MediaClient.join(server.ws, room, f"P{n}")
            joined.append(client)
            if small:
                client.publish_pc.addTrack(SlideTrack())
            await client.publish(silent=True, video=not small)
        yield joined
    finally:
        for client in joined:
            await client.close()


async def open_call(
    browser: Browser, server: ServerProcess, room: str, *, phone: bool, lang: str = "en"
) -> Page:
    """A participant joined to ``room`` on a phone (390x844, touch, no screen sharing) or a
    desktop (1280x800); its context is closed with the browser's other contexts by the caller."""
    context = await browser.new_context(
        permissions=["camera", "microphone"],
        base_url=server.http,
        viewport=PHONE if phone else DESKTOP,
        is_mobile=phone,
        has_touch=phone,
        bypass_csp=True,  # for axe-core, which is added as a script of the page
    )
    page = await context.new_page()
    if phone:
        await page.add_init_script(NO_DISPLAY_MEDIA)
    await page.goto(f"/r/{room}?name=Viewer&join=1&lang={lang}")
    await page.wait_for_function("() => !document.getElementById('meeting').hidden", timeout=15000)
    return page


async def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=f"{SHOTS}/{name}.png")


async def test_the_phone_toolbar_is_one_row_and_more_holds_the_rest_in_view(
    browser: Browser, server: ServerProcess
) -> None:
    """On a 390x844 touch screen (in Russian): the toolbar is one row of named icon buttons
    under 15 % of the screen, without screen sharing (the browser cannot share); More opens a
    menu whose every control is in view and reached with Tab, and Escape closes it."""
    words = strings("ru")
    async with publishers(server, "phone-bar", 1, small=True):
        page = await open_call(browser, server, "phone-bar", phone=True, lang="ru")
        try:
            bar = await page.evaluate(JS_TOOLBAR)
            print(f"\nphone toolbar: {bar}")
            assert bar["ids"] == ["mic", "cam", "chat-toggle", "people-toggle", "more", "leave"]
            assert len(set(bar["tops"])) == 1, bar["tops"]
            assert bar["height"] < 0.15 * PHONE["height"]
            assert bar["inView"]
            assert await page.is_hidden("#screen")
            for button, key in [("#more", "controls.more"), ("#leave", "meeting.leave")]:
                assert (await page.text_content(button) or "").strip() == words[key]
            assert await page.get_attribute("#more", "aria-expanded") == "false"
            assert await page.get_attribute("#chat-toggle", "title") == words["chat.title"]
            assert await page.is_hidden("#hand")

            await page.focus("#more")
            await page.keyboard.press("Enter")
            assert await page.get_attribute("#more", "aria-expanded") == "true"
            items = await page.evaluate(JS_MENU_ITEMS)
            await shot(page, "phone-more")
            assert {"hand", "speaker-view", "invite", "shortcuts-open"} <= {i["id"] for i in items}
            assert all(item["inView"] for item in items), items
            # Focus went into the menu; Tab reaches every control in it, in order.
            reached = [await page.evaluate(JS_FOCUSED)]
            for _ in range(len(items) - 1):
                await page.keyboard.press("Tab")
                reached.append(await page.evaluate(JS_FOCUSED))
            assert reached == [item["id"] for item in items]
            assert reached[0] == "hand"
            await page.keyboard.press("Escape")
            assert await page.get_attribute("#more", "aria-expanded") == "false"
            assert await page.get_attribute("#chat-toggle", "title") == words["chat.title"]
            assert await page.is_hidden("#hand")
            assert await page.evaluate("() => document.activeElement.id") == "more"

            # A choice made in the menu closes it.
            await page.tap("#more")
            await page.tap("#hand")
            assert await page.is_hidden("#hand")
            await page.wait_for_selector("#hand[aria-pressed='true']", state="attached")
        finally:
            await page.context.close()


async def test_chat_and_people_are_sheets_over_the_whole_phone_screen(
    browser: Browser, server: ServerProcess
) -> None:
    """On a phone, chat covers the whole screen with its input in view and focused (not under
    the toolbar), Escape or its close button closes it and focus goes back to its button;
    people is a sheet too, and opening it closes chat."""
    async with publishers(server, "phone-sheet", 1, small=True):
        page = await open_call(browser, server, "phone-sheet", phone=True, lang="fr")
        try:
            await page.tap("#chat-toggle")
            await page.wait_for_selector("#chat-panel:not([hidden])")
            box = await page.evaluate(
                "() => { const r = document.getElementById('chat-panel').getBoundingClientRect();"
                " return [r.left, r.top, r.right, r.bottom]; }"
            )
            assert box == [0, 0, PHONE["width"], PHONE["height"]]
            assert await page.evaluate("() => document.activeElement.id") == "chat-input"
            assert await page.eval_on_selector("#chat-input", JS_IN_VIEW)
            # Nothing lies over the input: the point at its middle is the input itself.
            assert await page.evaluate(
                "() => { const r = document.getElementById('chat-input').getBoundingClientRect();"
                " return document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2)"
                ".id === 'chat-input'; }"
            )
            # What the sheet covers is inert: Tab stays in the sheet.
            for _ in range(4):
                await page.keyboard.press("Tab")
                assert await page.evaluate(
                    "() => document.getElementById('chat-panel').contains(document.activeElement)"
                    " || document.activeElement === document.body"
                )
            await page.focus("#chat-input")
            await page.fill("#chat-input", "Bonjour")
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#chat-log li")
            assert await page.eval_on_selector("#chat-input", JS_IN_VIEW)
            await shot(page, "phone-chat")
            await page.keyboard.press("Escape")
            await page.wait_for_selector("#chat-panel[hidden]", state="attached")
            assert await page.evaluate("() => document.activeElement.id") == "chat-toggle"

            await page.tap("#chat-toggle")
            await page.tap("#chat-panel .panel-close")
            await page.wait_for_selector("#chat-panel[hidden]", state="attached")
            assert await page.evaluate("() => document.activeElement.id") == "chat-toggle"
            assert (
                await page.get_attribute("#chat-panel .panel-close", "aria-label")
                == (strings("fr")["panel.close"])
            )

            await page.tap("#chat-toggle")
            await page.evaluate("() => document.getElementById('people-toggle').click()")
            await page.wait_for_selector("#people-panel:not([hidden])")
            assert await page.is_hidden("#chat-panel")
            assert await page.eval_on_selector("#people-panel", JS_IN_VIEW)
            assert await page.evaluate(
                "() => document.activeElement"
                " === document.querySelector('#people-panel .panel-close')"
            )
        finally:
            await page.context.close()


async def test_four_by_three_video_is_never_cropped(
    browser: Browser, server: ServerProcess
) -> None:
    """Another participant's 640x480 video is drawn whole, inside its tile, on a phone (tiles
    in portrait would crop it) and on a desktop (16:9 tiles)."""
    async with publishers(server, "phone-tile", 1) as (publisher,):
        tile = f'.tile[data-participant-id="{publisher.participant_id}"]'
        for phone in (True, False):
            page = await open_call(browser, server, "phone-tile", phone=phone)
            try:
                await page.wait_for_function(
                    f"() => document.querySelector('{tile} video')?.videoWidth > 0", timeout=20000
                )
                picture = await page.eval_on_selector(tile, JS_PICTURE)
                print(f"\n{'phone' if phone else 'desktop'}: {picture}")
                assert (picture["vw"], picture["vh"]) == (640, 480)
                assert picture["fit"] in ("contain", "scale-down"), picture
                left, top, right, bottom = picture["box"]
                assert picture["pictureWidth"] <= right - left + 0.5
                assert picture["pictureHeight"] <= bottom - top + 0.5
                frame = picture["frame"]
                assert left >= frame[0] - 0.5
                assert top >= frame[1] - 0.5
                assert right <= frame[2] + 0.5
                assert bottom <= frame[3] + 0.5
                # The picture fills its tile in at least one direction (it is not shrunk).
                assert (
                    max(
                        picture["pictureWidth"] / (right - left),
                        picture["pictureHeight"] / (bottom - top),
                    )
                    > 0.99
                )
            finally:
                await page.context.close()


async def test_the_desktop_toolbar_keeps_every_control_and_plays_sound_to_the_chosen_speaker(
    browser: Browser, server: ServerProcess
) -> None:
    """At 1280x800 the toolbar shows every control (no More), screen sharing included; the
    Devices panel lists the browser's speakers, and the one chosen plays every remote sound,
    that of a participant who joins later too."""
    async with publishers(server, "desk-sink", 1, small=True):
        page = await open_call(browser, server, "desk-sink", phone=False)
        try:
            assert await page.is_hidden("#more")
            for control in ("#mic", "#screen", "#hand", "#invite", "#leave", "#speaker-view"):
                assert await page.eval_on_selector(control, JS_IN_VIEW), control
            assert await page.eval_on_selector("#mic .label", JS_IN_VIEW)
            await page.click(".settings summary")
            await page.wait_for_selector("#speaker-row:not([hidden])")
            options = await page.eval_on_selector_all(
                "#speaker-select option", "els => els.map(e => [e.value, e.textContent])"
            )
            print(f"\nspeakers: {options}")
            chosen = next(value for value, label in options if label == "Fake Audio Output 1")
            await page.select_option("#speaker-select", chosen)
            sinks = (
                "() => [...document.querySelectorAll('.tile:not(.me) audio')].map(a => a.sinkId)"
            )
            await page.wait_for_function(f"() => ({sinks})().every(s => s === '{chosen}')")
            async with publishers(server, "desk-sink", 1, small=True):
                await page.wait_for_function(f"() => ({sinks})().length === 2")
                await page.wait_for_function(
                    f"() => ({sinks})().every(s => s === '{chosen}')", timeout=5000
                )
        finally:
            await page.context.close()


async def test_picture_in_picture_follows_the_active_speaker_and_is_sent_while_out_of_sight(
    browser: Browser, server: ServerProcess
) -> None:
    """On a phone (pages of 4 tiles), picture-in-picture (headless Chromium supports it) opens
    from More on the active speaker's video and moves to the next speaker; its video is still
    sent while the tab is hidden (and only it) and while another page of tiles is shown; closing
    it stops that."""
    room = "phone-pip"
    async with publishers(server, room, 4, small=True) as (first, second, _, fourth):
        page = await open_call(browser, server, room, phone=True)
        me = await page.evaluate("() => window.veche.connection.participantId")
        try:
            await page.wait_for_function(
                "() => [...document.querySelectorAll('.tile:not(.me):not([hidden]) video')]"
                ".filter(v => v.videoWidth > 0).length === 3",
                timeout=20000,
            )
            await until(lambda: server.receiving(room, me)["video"] == 3, timeout=3)
            speak(first, True)
            await page.wait_for_selector(
                f'.tile.speaking[data-participant-id="{first.participant_id}"]'
            )
            await page.tap("#more")
            assert await page.is_visible("#pip")
            await page.tap("#pip")
            pip_of = (
                "() => document.pictureInPictureElement?.closest('.tile')?.dataset.participantId"
            )
            await page.wait_for_function(f"(id) => ({pip_of})() === id", arg=first.participant_id)
            assert await page.get_attribute("#pip", "aria-pressed") == "true"

            speak(first, False)
            speak(second, True)
            await page.wait_for_function(
                f"(id) => ({pip_of})() === id", arg=second.participant_id, timeout=15000
            )

            await page.evaluate(JS_HIDE_TAB)
            await until(lambda: server.receiving(room, me)["video"] == 1, timeout=3)
            await page.evaluate(
                "() => { delete document.visibilityState;"
                " document.dispatchEvent(new Event('visibilitychange')); }"
            )
            await until(lambda: server.receiving(room, me)["video"] == 3, timeout=3)

            # Page two shows the fourth alone; the speaker's tile is off the page, in the window.
            await page.tap(".pager-next")
            fourth_tile = f'.tile[data-participant-id="{fourth.participant_id}"]'
            await page.wait_for_selector(f"{fourth_tile}:not([hidden])")
            assert await page.evaluate(pip_of) == second.participant_id
            await until(lambda: server.receiving(room, me)["video"] == 2, timeout=3)

            await page.tap("#more")
            await page.tap("#pip")
            await page.wait_for_function("() => document.pictureInPictureElement === null")
            assert await page.get_attribute("#pip", "aria-pressed") == "false"
            await until(lambda: server.receiving(room, me)["video"] == 1, timeout=3)
        finally:
            await page.context.close()


async def test_the_phone_menu_and_chat_sheet_have_no_serious_accessibility_violation(
    browser: Browser, server: ServerProcess
) -> None:
    """axe-core finds no serious or critical violation on the phone's call screen with More
    open, and with the chat sheet open."""
    axe_path()

    async def check(page: Page, where: str) -> None:
        found = await serious_violations(page)
        assert found == [], f"{where}: {found}"

    async with publishers(server, "phone-axe", 1, small=True):
        page = await open_call(browser, server, "phone-axe", phone=True)
        try:
            await page.tap("#more")
            await check(page, "More open")
            await page.keyboard.press("Escape")
            await page.tap("#chat-toggle")
            await page.wait_for_selector("#chat-panel:not([hidden])")
            await check(page, "chat sheet open")
        finally:
            await page.context.close()


async def test_firefox_shows_the_phone_toolbar_in_one_row(server: ServerProcess) -> None:
    """In Firefox at 390x844, the toolbar is one row under 15 % of the screen, More's controls
    are in view, a speaker is offered only where Firefox can play to one, and chat is a sheet
    over the whole screen with its focused input in view."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    async with publishers(server, "fox-phone", 1, small=True), firefox() as fox:
        page = await fox.new_page(server.http)
        await page.set_viewport_size(PHONE)
        await page.goto("/r/fox-phone?name=Fox&join=1&lang=en")
        await page.wait_for_function(
            "() => !document.getElementById('meeting').hidden", timeout=20000
        )
        bar = await page.evaluate(JS_TOOLBAR)
        print(f"\nFirefox phone toolbar: {bar}")
        assert len(set(bar["tops"])) == 1, bar["tops"]
        assert bar["height"] < 0.15 * PHONE["height"]
        assert bar["inView"]
        await page.click("#more")
        items = await page.evaluate(JS_MENU_ITEMS)
        assert items
        assert all(item["inView"] for item in items), items
        speaker = await page.evaluate(
            "() => ({can: 'setSinkId' in HTMLMediaElement.prototype,"
            " shown: !document.getElementById('speaker-row').hidden})"
        )
        print(f"Firefox speaker choice: {speaker}")
        if not speaker["can"]:
            assert not speaker["shown"]
        await page.press("#more", "Escape")
        await page.click("#chat-toggle")
        await page.wait_for_selector("#chat-panel:not([hidden])")
        # The whole viewport but a classic scrollbar, which Firefox draws (phones overlay theirs).
        box = await page.evaluate(
            "() => { const r = document.getElementById('chat-panel').getBoundingClientRect();"
            " const page = document.documentElement;"
            " return [[r.left, r.top, r.right, r.bottom].map(Math.round),"
            " [0, 0, page.clientWidth, page.clientHeight]]; }"
        )
        assert box[0] == box[1]
        assert box[1][2] >= PHONE["width"] - 20
        assert await page.evaluate("() => document.activeElement.id") == "chat-input"
        assert await page.evaluate(
            "() => { const r = document.getElementById('chat-input').getBoundingClientRect();"
            " return r.top >= 0 && r.bottom <= innerHeight && document.elementFromPoint("
            "(r.left + r.right) / 2, (r.top + r.bottom) / 2).id === 'chat-input'; }"
        )
        await page.close()
