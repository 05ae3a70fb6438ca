"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .redisproc import RedisProcess, run_redis


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    """A real redis-server of the test module's own (stopped after its last test)."""
    with run_redis() as server:
        yield server
