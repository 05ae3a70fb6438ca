"""One real Veche server and one Debian Chromium for the whole browser suite.

Participants are browser contexts (each with its own fake camera and microphone), far cheaper
than one browser each. Everything runs inside the private network namespace of ``make test``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, ViewportSize, async_playwright

from tests.integration.serverproc import ServerProcess, run_server

CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")

pytestmark = pytest.mark.slow


def chromium_path() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).exists():
            return path
    found = shutil.which("chromium")
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if os.environ.get("VECHE_IN_NETNS") != "1":
        reason = "browser calls run inside a private network namespace (make test)"
    elif chromium_path() is None:
        reason = "Debian chromium is not installed (make test installs it as root)"
    if reason:
        for item in items:
            if "tests/browser" in str(item.fspath):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with run_server("--host", "127.0.0.1") as process:
        yield process
        assert process.terminate() == 0


@contextlib.asynccontextmanager
async def chromium(
    *,
    fake_ui: bool = False,
    extra_args: tuple[str, ...] = (),
    executable: str | None = None,
) -> AsyncIterator[Browser]:
    """Debian's Chromium with a fake camera and microphone. ``fake_ui`` also accepts every
    permission prompt (and makes getDisplayMedia share a synthetic screen); without it, a
    context has the devices only if granted the permissions. ``executable`` runs it through
    a launcher (in another network namespace, say)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable or chromium_path(),
            args=[
                "--use-fake-device-for-media-stream",
                *(["--use-fake-ui-for-media-stream"] if fake_ui else []),
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-gpu",
                *extra_args,
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


@contextlib.asynccontextmanager
async def meeting_pages(
    browser: Browser, room: str, people: list[tuple[str, str]]
) -> AsyncIterator[list[Page]]:
    """One browser context per ``(base_url, name)``, each joined to ``room`` directly (fake
    devices granted, English); the contexts are closed afterwards."""
    contexts: list[BrowserContext] = []
    try:
        pages = []
        for base_url, name in people:
            context = await browser.new_context(
                permissions=["camera", "microphone"], base_url=base_url
            )
            contexts.append(context)
            page = await context.new_page()
            await page.goto(f"/r/{room}?name={name}&join=1&lang=en")
            pages.append(page)
        yield pages
    finally:
        for context in contexts:
            await context.close()


OpenPage = Callable[..., Awaitable[Page]]
"""What :func:`page_opener` gives: ``await open_page(path, size, ready, bypass_csp)``."""
SIZES: dict[str, ViewportSize] = {
    "desktop": {"width": 1280, "height": 800},
    "phone": {"width": 390, "height": 844},
}
"""The screen sizes the client is tried at."""


@contextlib.asynccontextmanager
async def page_opener(
    browser: Browser, base_url: str, *, init: str = "", bypass_csp: bool = False
) -> AsyncIterator[OpenPage]:
    """``await open_page(path, size="desktop", ready=True)`` opens ``path`` in a context of
    its own (devices granted, ``init`` run before the page's scripts, at a size of
    :data:`SIZES`), waiting for the client to be ready unless ``ready`` is false;
    ``bypass_csp`` lets a test add scripts (axe-core). Every context is closed afterwards."""
    contexts: list[BrowserContext] = []

    async def open_page(
        path: str, size: str = "desktop", ready: bool = True, bypass_csp: bool = bypass_csp
    ) -> Page:
        context = await browser.new_context(
            permissions=["camera", "microphone"],
            base_url=base_url,
            viewport=SIZES[size],
            bypass_csp=bypass_csp,
        )
        contexts.append(context)
        page = await context.new_page()
        if init:
            await page.add_init_script(init)
        await page.goto(path)
        if ready:
            await page.wait_for_function("() => window.veche?.ready === true")
        return page

    try:
        yield open_page
    finally:
        for context in contexts:
            await context.close()


AXE_PATHS = (
    Path(__file__).resolve().parents[2]
    / ".venv"
    / "tools"
    / "node_modules"
    / "axe-core"
    / "axe.min.js",
    Path(os.environ.get("VECHE_AXE", "/nonexistent")),
)
"""Where axe-core may be: ``make test`` installs it under ``.venv/tools``."""


def axe_path() -> Path:
    """axe-core's script; the test is skipped where it is not installed."""
    axe = next((path for path in AXE_PATHS if path.is_file()), None)
    if axe is None:
        pytest.skip("axe-core is not installed under .venv/tools (make test installs it)")
    return axe


async def serious_violations(page: Page) -> list[str]:
    """What axe-core finds on ``page`` of impact serious or critical, one line each (the page
    needs ``bypass_csp`` to take the script)."""
    await page.add_script_tag(path=str(axe_path()))
    found: list[str] = await page.evaluate(
        "async () => (await axe.run()).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => `${v.id}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)"
    )
    return found


REMOTE_VIDEO_PLAYS = (
    "() => [...document.querySelectorAll('.tile:not(.me) video')].some(v => v.videoWidth > 0)"
)
"""Page function: some other participant's video is showing."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched
