"""Waiting in tests for something that happens in another task or process."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def until(
    check: Callable[[], bool | Awaitable[bool]], timeout: float, step: float = 0.05
) -> float:
    """Wait until ``check()`` (a plain or an async predicate) is true; the seconds it took.
    Fails the test after ``timeout`` seconds."""
    start = time.monotonic()
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
