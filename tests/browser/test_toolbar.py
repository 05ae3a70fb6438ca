"""The call's toolbar on a desktop: one row at 1280x800 in every language, a moderator's Record
button included, its names shown while they fit and otherwise given way to icons whose names
stay for screen readers, as tooltips and above a keyboard-focused button; in Chromium (axe-core
too) and Firefox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser.conftest import serious_violations
from tests.browser.firefox import firefox, firefox_missing
from tests.integration.serverproc import ServerProcess, run_server
from veche.assets import web_root

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DESKTOP = {"width": 1280, "height": 800}
WIDE = {"width": 2400, "height": 1000}

JS_CONTROLS = """() => {
  const bar = document.querySelector('.controls');
  const shown = [...bar.querySelectorAll('button, summary')]
    .filter(el => el.getClientRects().length);
  const first = shown[0].getBoundingClientRect();
  return {
    height: bar.getBoundingClientRect().height,
    mode: ['compact', 'icons'].filter(c => bar.classList.contains(c)),
    oneRow: shown.every(el => el.getBoundingClientRect().top < first.bottom),
    inView: shown.every(el => { const r = el.getBoundingClientRect();
      return r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; }),
    controls: shown.map(el => ({
      id: el.id || el.getAttribute('aria-label') || el.textContent.trim(),
      label: el.querySelector('.label')?.textContent ?? null,
      title: el.getAttribute('title'),
      labelShown: (el.querySelector('.label')?.getBoundingClientRect().width ?? 0) > 2})),
  };
}"""
"""Page function: the toolbar's height and fit mode, whether its shown controls stand on one row
and in view, and each one's id (or name), label, tooltip and whether the label is drawn."""

JS_FOCUSED = """() => { const el = document.activeElement;
  return el.id || el.getAttribute('aria-label') || el.textContent.trim(); }"""

JS_TOOLTIP = """(id) => {
  const button = document.getElementById(id).getBoundingClientRect();
  const label = document.querySelector(`#${id} .label`).getBoundingClientRect();
  return {width: label.width, above: label.bottom <= button.top};
}"""
"""Page function: the width of a button's label and whether it is drawn above the button."""


def strings(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((web_root() / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


NAMES = {
    "mic": "controls.microphone",
    "cam": "controls.camera",
    "chat-toggle": "chat.title",
    "people-toggle": "meeting.people",
    "screen": "controls.screen",
    "hand": "controls.hand",
    "record": "recording.record",
    "speaker-view": "controls.speaker_view",
    "invite": "invite.button",
    "leave": "meeting.leave",
}
"""Toolbar buttons and the keys of their names."""


@pytest.fixture(scope="module")
def recording_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server where a moderator may record: the toolbar has its Record button too."""
    folder = tmp_path_factory.mktemp("recordings")
    with run_server(
        "--host", "127.0.0.1", "--recording-dir", str(folder), "--recording-anonymous"
    ) as process:
        yield process
        assert process.terminate() == 0


async def _moderator(browser: Browser, server: ServerProcess, room: str, lang: str) -> Page:
    context = await browser.new_context(
        permissions=["camera", "microphone"],
        base_url=server.http,
        viewport=WIDE,  # type: ignore[arg-type]
        bypass_csp=True,  # for axe-core
    )
    page = await context.new_page()
    await page.goto(f"/r/{room}?name=Host&join=1&lang={lang}")
    await page.wait_for_selector("#record:not([hidden])", timeout=15000)
    return page


def _check_names(bar: dict[str, Any], words: dict[str, str]) -> None:
    by_id = {c["id"]: c for c in bar["controls"]}
    for button, key in NAMES.items():
        assert by_id[button]["label"] == words[key], button
        assert by_id[button]["title"] == words[key], button


@pytest.mark.parametrize("lang", ["fr", "ru", "en"])
async def test_the_desktop_toolbar_is_one_row_at_1280_px(
    browser: Browser, recording_server: ServerProcess, lang: str
) -> None:
    """A moderator's toolbar shows every name on a very wide screen; at 1280x800 it is one row
    in view, every control keeps its name (label and tooltip), Tab reaches them all in order,
    a keyboard-focused icon shows its name above it, and axe-core finds nothing serious."""
    words = strings(lang)
    page = await _moderator(browser, recording_server, f"bar-{lang}", lang)
    try:
        wide = await page.evaluate(JS_CONTROLS)
        assert wide["oneRow"], wide
        assert wide["mode"] == [], wide["mode"]
        assert all(c["labelShown"] for c in wide["controls"] if c["label"] is not None), wide
        _check_names(wide, words)

        await page.set_viewport_size(DESKTOP)  # type: ignore[arg-type]
        await page.wait_for_function(
            "() => document.querySelector('.controls').classList.contains('compact')"
        )
        bar = await page.evaluate(JS_CONTROLS)
        print(f"\n{lang} at 1280: {bar['mode']}, {bar['height']:.0f} px high")
        assert bar["oneRow"], bar
        assert bar["inView"], bar
        assert bar["height"] < 70
        assert await page.is_hidden("#more")
        _check_names(bar, words)

        ids = [c["id"] for c in bar["controls"]]
        await page.focus("#mic")
        reached = [await page.evaluate(JS_FOCUSED)]
        for _ in range(len(ids) - 1):
            await page.keyboard.press("Tab")
            reached.append(await page.evaluate(JS_FOCUSED))
        assert reached == ids

        # The menu's items are icons now: one focused from the keyboard shows its name.
        assert not next(c for c in bar["controls"] if c["id"] == "screen")["labelShown"]
        await page.focus("#cam")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        await page.keyboard.press("Tab")
        assert await page.evaluate(JS_FOCUSED) == "screen"
        tooltip = await page.evaluate(JS_TOOLTIP, "screen")
        assert tooltip["width"] > 20, tooltip
        assert tooltip["above"], tooltip
        found = await serious_violations(page)
        assert found == [], found
    finally:
        await page.context.close()


async def test_firefox_shows_the_desktop_toolbar_in_one_row(
    recording_server: ServerProcess,
) -> None:
    """In Firefox at 1280x800, in Russian (the longest names), a moderator's toolbar is one
    row in view and every control keeps its name."""
    reason = firefox_missing()
    if reason:
        pytest.skip(reason)
    words = strings("ru")
    async with firefox() as fox:
        page = await fox.new_page(recording_server.http)
        await page.set_viewport_size(DESKTOP)
        await page.goto("/r/fox-bar?name=Host&join=1&lang=ru")
        await page.wait_for_selector("#record:not([hidden])", timeout=20000)
        await page.wait_for_function(
            "() => document.querySelector('.controls').classList.contains('compact')"
        )
        bar = await page.evaluate(JS_CONTROLS)
        print(f"\nFirefox ru at 1280: {bar['mode']}, {bar['height']:.0f} px high")
        assert bar["oneRow"], bar
        assert bar["inView"], bar
        _check_names(bar, words)
        await page.close()
