"""The README's screenshots, taken from a real call: ``make screenshots``.

Starts a Veche server, three Chromium participants with Chromium's fake cameras and two aiortc
participants (one with its camera off), holds a short meeting (a chat message, a raised hand)
and photographs it as people see it: on a desktop (1280x800, English, chat open) and on a
phone (390x844, French and Russian). The pictures go to ``docs/screenshots/`` (or the folder
given), overwriting the previous ones; nothing is drawn by hand.

Run it inside the test namespace (``scripts/netns-run``), as ``make screenshots`` does, so the
call uses private addresses.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import Browser, Page  # noqa: E402
from tests.browser.conftest import chromium  # noqa: E402
from tests.integration.peers import MediaClient  # noqa: E402
from tests.integration.serverproc import run_server  # noqa: E402

ROOM = "seminar"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
PLAYING = (
    "(n) => [...document.querySelectorAll('.tile:not(.me) video')]"
    ".filter(v => v.videoWidth > 0).length >= n"
)
"""Page function: at least ``n`` other participants' videos are showing."""


async def _join(
    browser: Browser, base: str, name: str, lang: str, viewport: dict[str, int], *, phone: bool
) -> Page:
    context = await browser.new_context(
        permissions=["camera", "microphone"],
        base_url=base,
        viewport=viewport,
        is_mobile=phone,
        has_touch=phone,
        device_scale_factor=2 if phone else 1,
    )
    page = await context.new_page()
    await page.goto(f"/r/{ROOM}?name={name}&join=1&lang={lang}")
    await page.wait_for_selector("#leave:not([hidden])", timeout=30_000)
    return page


async def _settle(page: Page, videos: int) -> None:
    await page.wait_for_function(PLAYING, arg=videos, timeout=30_000)
    await page.wait_for_timeout(1500)  # the first frames are decoded and the grid has settled


async def take(folder: Path) -> list[Path]:
    written: list[Path] = []
    with run_server("--host", "127.0.0.1") as server:
        others = [await MediaClient.join(server.ws, ROOM, name) for name in ("Elena", "Farid")]
        try:
            await others[0].publish(cheap=True)
            await others[1].publish(video=False, silent=True)
            async with chromium() as browser:
                host = await _join(browser, server.http, "Anna", "en", DESKTOP, phone=False)
                boris = await _join(browser, server.http, "Boris", "ru", PHONE, phone=True)
                chloe = await _join(browser, server.http, "Chloé", "fr", PHONE, phone=True)
                await _settle(host, 3)
                await boris.keyboard.press("h")  # Boris raises his hand
                await host.click("#chat-toggle")
                await host.fill("#chat-input", "Welcome! Slides are in the shared folder.")
                await host.press("#chat-input", "Enter")
                await chloe.wait_for_timeout(500)
                await host.wait_for_timeout(1000)
                shots = [
                    (host, "desktop-en.png"),
                    (chloe, "phone-fr.png"),
                    (boris, "phone-ru.png"),
                ]
                for page, name in shots:
                    await _settle(page, 1)
                    await page.screenshot(path=str(folder / name))
                    written.append(folder / name)
        finally:
            for other in others:
                await other.close()
    return written


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(take(folder)):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
