"""Ending background tasks: cancel, then wait until they have ended."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (nothing if ``None``) and wait until it has ended; its cancellation is
    swallowed, so the caller goes on (an exception it had already ended with is raised)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
