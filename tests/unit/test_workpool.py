"""The bounded thread pool that hashes passwords off the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from veche.workpool import PoolFull, WorkPool


async def test_work_pool_runs_calls_in_a_worker_thread() -> None:
    """A call runs in one of the pool's threads, not the event loop's, and returns its value."""
    pool = WorkPool(threads=1, limit=2)
    try:
        name = await pool.run(lambda: threading.current_thread().name)
    finally:
        pool.close()
    assert name != threading.current_thread().name
    assert name.startswith("veche-work")


async def test_work_pool_refuses_calls_beyond_its_limit() -> None:
    """With ``limit`` calls running or waiting, one more is refused at once; a slot freed is
    usable again."""
    pool = WorkPool(threads=1, limit=2)
    release = threading.Event()
    try:
        busy = [asyncio.ensure_future(pool.run(lambda: release.wait(5))) for _ in range(2)]
        await asyncio.sleep(0)
        assert pool.pending == 2
        with pytest.raises(PoolFull):
            await pool.run(lambda: 1)
        release.set()
        assert await asyncio.gather(*busy) == [True, True]
        assert pool.pending == 0
        assert await pool.run(lambda: 1) == 1
    finally:
        release.set()
        pool.close()
