"""Debian's Firefox ESR for the browser tests, driven over WebDriver BiDi.

Playwright's Firefox is a patched build that cannot be fetched here, so ``firefox_driver.mjs``
drives the stock ``firefox-esr`` with ``puppeteer-core`` (no browser download). A
:class:`FirefoxPage` answers the few Playwright ``Page`` calls the call tests use (``goto``,
``evaluate``, ``wait_for_function``, ``click``, ``wait_for_selector``, ``text_content``,
``get_attribute``, ``fill``), so one test body runs in either browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("firefox_driver.mjs")
NODE_TOOLS = ROOT / ".venv" / "tools"
FIREFOX = "/usr/bin/firefox-esr"

__all__ = ["Firefox", "FirefoxPage", "firefox", "firefox_missing"]


def firefox_missing() -> str | None:
    """Why Firefox tests cannot run here, or None. On CI (``CI=true``, where ``make test``
    installed everything) a missing part is not a reason to skip: the check fails instead."""
    reason = _missing()
    if reason and os.environ.get("CI") == "true":
        raise AssertionError(f"CI must run the Firefox tests: {reason}")
    return reason


def _missing() -> str | None:
    if not Path(FIREFOX).exists():
        return "Debian firefox-esr is not installed (make test installs it as root)"
    if shutil.which("node") is None:
        return "node is not installed (make test installs it as root)"
    if not (NODE_TOOLS / "node_modules" / "puppeteer-core").is_dir():
        return "puppeteer-core is not installed under .venv/tools (make test installs it)"
    return None


class DriverError(RuntimeError):
    """The driver reported a failed command (a timeout, a script error...)."""


class Firefox:
    """One Firefox process; :meth:`new_page` opens a participant (its own context and window)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            future = self._waiting.pop(reply.get("id"), None)
            if future is None or future.done():
                continue
            if "error" in reply:
                future.set_exception(DriverError(reply["error"]))
            else:
                future.set_result(reply.get("value"))
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(DriverError("the Firefox driver exited"))

    async def command(self, op: str, *, within: float = 60, **fields: Any) -> Any:
        """Send one command and wait (at most ``within`` seconds) for its reply."""
        assert self._process.stdin is not None
        number = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        line = json.dumps({"id": number, "op": op, **fields}) + "\n"
        self._process.stdin.write(line.encode())
        await self._process.stdin.drain()
        return await asyncio.wait_for(future, within)

    async def new_page(self, base_url: str) -> FirefoxPage:
        """A new participant: a context of its own in a window of its own."""
        number = await self.command("open")
        return FirefoxPage(self, number, base_url)

    async def version(self) -> str:
        value: str = await self.command("version")
        return value


class FirefoxPage:
    """One Firefox window, with Playwright's names for what the call tests do."""

    def __init__(self, browser: Firefox, number: int, base_url: str) -> None:
        self._browser = browser
        self._number = number
        self._base_url = base_url.rstrip("/")

    async def add_init_script(self, script: str) -> None:
        """Run ``script`` in every document this page loads, before the page's own scripts."""
        await self._browser.command("init", page=self._number, script=script)

    async def goto(self, url: str) -> None:
        full = self._base_url + url if url.startswith("/") else url
        await self._browser.command("goto", page=self._number, url=full)

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        """Call the page function ``script`` (JavaScript source) with ``arg``; its result."""
        return await self._browser.command("evaluate", page=self._number, script=script, arg=arg)

    async def wait_for_function(
        self, script: str, *, arg: Any = None, timeout: float = 30000
    ) -> None:
        """Wait until the page function ``script`` returns something truthy (``timeout`` in
        milliseconds, as Playwright's)."""
        await self._browser.command(
            "wait",
            page=self._number,
            script=script,
            arg=arg,
            timeout=timeout,
            within=timeout / 1000 + 10,
        )

    async def wait_for_selector(self, selector: str, *, timeout: float = 30000) -> None:
        await self.wait_for_function(
            "(s) => document.querySelector(s) !== null", arg=selector, timeout=timeout
        )

    async def click(self, selector: str) -> None:
        await self._browser.command("click", page=self._number, selector=selector)

    async def fill(self, selector: str, value: str) -> None:
        await self._browser.command("fill", page=self._number, selector=selector, value=value)

    async def press(self, selector: str, key: str) -> None:
        await self.click(selector)
        await self._browser.command("press", page=self._number, key=key)

    async def text_content(self, selector: str) -> str | None:
        value: str | None = await self.evaluate(
            "(s) => document.querySelector(s)?.textContent ?? null", selector
        )
        return value

    async def get_attribute(self, selector: str, name: str) -> str | None:
        value: str | None = await self.evaluate(
            "([s, n]) => document.querySelector(s)?.getAttribute(n) ?? null", [selector, name]
        )
        return value

    async def set_viewport_size(self, size: dict[str, int]) -> None:
        """Resize the page's viewport (``{"width": ..., "height": ...}``, as Playwright's)."""
        await self._browser.command(
            "viewport", page=self._number, width=size["width"], height=size["height"]
        )

    async def screenshot(self, *, path: str) -> None:
        """Save a PNG of the viewport to ``path``."""
        await self._browser.command("screenshot", page=self._number, path=path)

    async def close(self) -> None:
        """Close this participant's window and context."""
        with contextlib.suppress(DriverError, TimeoutError):
            await self._browser.command("close", page=self._number, within=15)


@contextlib.asynccontextmanager
async def firefox(
    launcher: Sequence[str] = (), secure_origins: Sequence[str] = ()
) -> AsyncIterator[Firefox]:
    """A headless Firefox ESR with a fake camera and microphone. ``launcher`` prefixes the
    driver's command (``ip netns exec NAME`` runs the browser in another network namespace);
    ``secure_origins`` are hosts treated as secure although served over plain HTTP (camera
    access needs a secure context). The driver and the browser it started are stopped by their
    process group afterwards."""
    prefs = {"dom.securecontext.allowlist": ",".join(secure_origins)} if secure_origins else {}
    with tempfile.TemporaryFile("w+") as errors:
        process = await asyncio.create_subprocess_exec(
            *launcher,
            "node",
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            env={
                **os.environ,
                "VECHE_NODE_TOOLS": str(NODE_TOOLS),
                "VECHE_FIREFOX": FIREFOX,
                "VECHE_FIREFOX_PREFS": json.dumps(prefs),
            },
            start_new_session=True,
        )
        browser = Firefox(process)
        try:
            try:
                await browser.version()
            except (DriverError, TimeoutError):
                errors.seek(0)
                raise DriverError(f"Firefox did not start:\n{errors.read()[-4000:]}") from None
            yield browser
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            # Firefox's own children, if the driver exited without closing it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            browser._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await browser._reader
