"""A few threads for CPU-heavy calls that release the GIL (scrypt), off the event loop.

The queue is bounded: a call beyond ``limit`` running or waiting is refused at once with
:class:`PoolFull` instead of waiting behind a flood, so one client cannot make others wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["PoolFull", "WorkPool"]

T = TypeVar("T")


class PoolFull(Exception):
    """Every slot of the pool is taken; try again later."""


class WorkPool:
    """``threads`` worker threads, at most ``limit`` calls running or waiting."""

    def __init__(self, *, threads: int, limit: int) -> None:
        self.limit = limit
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="veche-work")
        self._pending = 0

    @property
    def pending(self) -> int:
        """Calls running or waiting now."""
        return self._pending

    async def run(self, call: Callable[[], T]) -> T:
        """The result of ``call()``, run in a worker thread. Raises :class:`PoolFull` when
        ``limit`` calls are running or waiting already."""
        if self._pending >= self.limit:
            raise PoolFull(f"{self._pending} calls are running or waiting")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Drop the waiting calls and let the threads end (a running call finishes)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
