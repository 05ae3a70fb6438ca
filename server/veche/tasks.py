"""Background tasks: a periodic one, and ending them (cancel, then wait until they have ended)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

__all__ = ["cancel_and_wait", "every"]

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (nothing if ``None``) and wait until it has ended; its cancellation is
    swallowed, so the caller goes on (an exception it had already ended with is raised)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def every(interval: float, action: Callable[[], None], what: str) -> None:
    """Call ``action`` every ``interval`` seconds until cancelled; a round that raises is logged
    (``what`` names it) and the next one comes as usual."""
    while True:
        await asyncio.sleep(interval)
        try:
            action()
        except Exception:
            log.exception("%s failed", what)
