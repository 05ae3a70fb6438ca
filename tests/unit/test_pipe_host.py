"""The default pipe address: the one this host reaches Redis from, without a setting."""

from __future__ import annotations

import pytest

from veche.cluster.pipes import default_pipe_host


@pytest.mark.parametrize(
    "url",
    [None, "unix:///run/veche/redis.sock", "redis://127.0.0.1:6379/0", "redis://localhost/0"],
)
async def test_pipe_host_is_loopback_for_one_machine(url: str | None) -> None:
    """Workers of one machine (embedded Redis on a Unix socket) or a Redis on loopback: the
    pipes stay on loopback."""
    assert await default_pipe_host(url) == "127.0.0.1"


async def test_pipe_host_falls_back_to_loopback_when_redis_has_no_route(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis name that does not resolve: loopback, and a warning says why."""
    assert await default_pipe_host("redis://no-such-host.invalid:6379/0") == "127.0.0.1"
    assert "pipe_host" in caplog.text
