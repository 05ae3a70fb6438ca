"""Helpers for driving ``/ws`` with aiohttp's test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType


async def recv(ws: ClientWebSocketResponse, timeout: float = 3.0) -> dict[str, Any]:
    """The next JSON message; fails on anything else."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r}"
    data: dict[str, Any] = json.loads(msg.data)
    return data


async def expect(ws: ClientWebSocketResponse, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    """Skip messages until one of type ``kind``."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv(ws, timeout)
            if message["type"] == kind:
                return message


async def hello(ws: ClientWebSocketResponse, room: str, name: str) -> dict[str, Any]:
    """Join and return the welcome."""
    await ws.send_json({"type": "hello", "version": 1, "room": room, "name": name})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome", welcome
    return welcome


async def ping_ok(ws: ClientWebSocketResponse, ref: str = "check") -> None:
    """The connection is alive and answers in order: a ping gets its pong next."""
    await ws.send_json({"type": "ping", "id": ref})
    assert await recv(ws) == {"type": "pong", "ref": ref}


async def no_message(ws: ClientWebSocketResponse, within: float = 0.2) -> None:
    """Nothing arrives for ``within`` seconds."""
    try:
        msg = await ws.receive(timeout=within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {msg.type!r} {msg.data!r}")


async def expect_where(
    ws: ClientWebSocketResponse,
    kind: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 3.0,
) -> dict[str, Any]:
    """Skip messages until one of type ``kind`` that satisfies ``predicate``."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv(ws, timeout)
            if message["type"] == kind and predicate(message):
                return message
