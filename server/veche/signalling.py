"""The WebSocket edge: origin check, one loop per client, the only code that writes to a socket.

Each connection runs :meth:`ClientConnection.run`, a single loop that reads frames, drains the
connection's bounded outbox and performs the close. Everything else (the hub, rooms, other
clients' loops) only *queues* messages through :meth:`ClientConnection.send`, which never blocks:
a client that stops reading fills its own outbox and is closed with 1013, and nobody waits for it.
Keepalive pings are aiohttp's heartbeat; a client that misses a pong is dropped. Each text frame
goes to :meth:`veche.cluster.relay.Relay.accept`: to this node's hub, or to the room's node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from typing import Final

from aiohttp import WSMessage, WSMsgType, web

from veche.appkeys import HUB, RELAY, SETTINGS
from veche.auth import AuthError, verify_token
from veche.cluster.relay import Relay
from veche.errors import ErrorCode, InvalidRoomName
from veche.logs import CONNECTION
from veche.protocol import (
    MAX_MESSAGE_BYTES,
    CloseCode,
    Error,
    LeaveReason,
    ServerMessage,
    encode,
)
from veche.ratelimit import TokenBucket
from veche.rooms import normalize_room_name
from veche.session import Session
from veche.settings import Settings
from veche.signin import SIGNIN
from veche.views import browser_session

__all__ = ["ClientConnection", "client_address", "origin_allowed", "websocket_handler"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 2.0
"""Seconds to wait for the client's close frame before dropping the TCP connection."""


_CLOSE_REASONS: Final[dict[CloseCode, LeaveReason]] = {
    CloseCode.TRY_AGAIN_LATER: "slow",
    CloseCode.GOING_AWAY: "shutdown",
    CloseCode.POLICY: "disconnected",
    CloseCode.SERVICE_RESTART: "timeout",
}


class ClientConnection:
    """One client's WebSocket and its bounded outbox (implements :class:`veche.outlet.Outlet`)."""

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.BaseTransport | None, settings: Settings
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = settings.ws_outbox_size
        self._send_timeout = settings.ws_send_timeout
        self._outbox: deque[str] = deque()
        self._wake = asyncio.Event()
        self._close_request: tuple[CloseCode, str] | None = None
        self._end: LeaveReason | None = None
        now = time.monotonic()
        self._bucket = TokenBucket(rate=settings.ws_rate, burst=settings.ws_burst, now=now)
        self._limited_since: float | None = None
        self._last_warning = float("-inf")
        self._over_limit = 0
        self._hello_timeout = settings.hello_timeout

    def send(self, message: ServerMessage) -> None:
        """Queue ``message``; if the outbox is full the client is closed as not reading."""
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        """Queue an encoded server message (as :meth:`send`)."""
        if self._close_request is not None:
            return
        if len(self._outbox) >= self._limit:
            self.close(CloseCode.TRY_AGAIN_LATER, "not reading fast enough")
            return
        self._outbox.append(text)
        self._wake.set()

    def close(self, code: CloseCode, reason: str) -> None:
        """Ask the loop to send what is queued (unless the client is slow) and close."""
        if self._close_request is None:
            self._close_request = (code, reason)
            if code is CloseCode.TRY_AGAIN_LATER:
                self._outbox.clear()
            self._wake.set()

    async def run(self, session: Session, relay: Relay) -> LeaveReason:
        """Serve the connection until it closes; return why it ended. Every text frame goes to
        ``relay``, which hands it to this node's hub or to the node that owns the room."""

        def no_hello() -> None:
            if session.participant is None and not relay.carries(session):
                self.close(CloseCode.POLICY, "no hello")

        timer = asyncio.get_running_loop().call_later(self._hello_timeout, no_hello)
        try:
            self._end = await self._serve(session, relay)
        finally:
            timer.cancel()
        return self._end

    def _allowed(self) -> bool:
        """Rate limit: over the burst, frames are refused with ``rate_limited`` (said at most
        once a second); a client that goes on for another burst's worth is closed with 1008."""
        now = time.monotonic()
        if self._bucket.take(now=now):
            self._over_limit = 0
            return True
        self._over_limit += 1
        if self._over_limit > self._bucket.burst:
            self.close(CloseCode.POLICY, "too many messages")
        elif now - self._last_warning >= 1.0:
            self._last_warning = now
            self.send(
                Error(
                    code=ErrorCode.RATE_LIMITED,
                    message=f"more than {self._bucket.rate:g} messages per second; slow down",
                )
            )
        return False

    async def _serve(self, session: Session, relay: Relay) -> LeaveReason:
        receive: asyncio.Task[object] = asyncio.ensure_future(self._ws.receive())
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            while True:
                done, _ = await asyncio.wait({receive, wake}, return_when=asyncio.FIRST_COMPLETED)
                if wake in done:
                    self._wake.clear()
                    if not await self._flush():
                        self._end = "slow"
                        return self._end
                    if self._close_request is not None:
                        self._end = _CLOSE_REASONS.get(self._close_request[0], "left")
                        await self._close(*self._close_request)
                        return self._end
                    wake = asyncio.ensure_future(self._wake.wait())
                if receive in done:
                    reason = await self._on_frame(receive.result(), session, relay)
                    if reason is not None:
                        return reason
                    receive = asyncio.ensure_future(self._ws.receive())
        finally:
            for task in (receive, wake):
                task.cancel()
            await asyncio.gather(receive, wake, return_exceptions=True)

    async def _on_frame(self, msg: object, session: Session, relay: Relay) -> LeaveReason | None:
        assert isinstance(msg, WSMessage)
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._allowed():
            return None
        if msg.type is WSMsgType.TEXT:
            await relay.accept(session, msg.data)
            return None
        if msg.type is WSMsgType.BINARY:
            self.send(
                Error(
                    code=ErrorCode.BINARY_UNSUPPORTED,
                    message="binary frames are not part of the protocol; send JSON text",
                )
            )
            return None
        if msg.type is WSMsgType.ERROR and not isinstance(msg.data, TimeoutError):
            log.info("websocket error", extra={"error": str(msg.data)})
        return self.loss_reason()

    def loss_reason(self) -> LeaveReason:
        """Why the connection ended: as decided by the loop; else ``disconnected`` when the
        client closed it (a close frame, or its end of the TCP connection: the client chose to
        go, or is gone), and ``timeout`` when it was lost (a missed keepalive, a reset, a close
        that says :attr:`CloseCode.RECONNECTING`, or nothing at all)."""
        if self._end is not None:
            return self._end
        code = self._ws.close_code
        if code == CloseCode.RECONNECTING or isinstance(
            self._ws.exception(), (TimeoutError, ConnectionError)
        ):
            return "timeout"
        return "timeout" if code is None else "disconnected"

    async def _flush(self) -> bool:
        """Send every queued message; False if a write blocked for too long."""
        while self._outbox:
            text = self._outbox.popleft()
            try:
                await asyncio.wait_for(self._ws.send_str(text), self._send_timeout)
            except TimeoutError:
                self._abort()
                return False
            except ConnectionError:
                return True  # the socket is gone; the next receive reports it
        return True

    async def _close(self, code: CloseCode, reason: str) -> None:
        try:
            await asyncio.wait_for(
                self._ws.close(code=code, message=reason.encode()), CLOSE_TIMEOUT
            )
        except (TimeoutError, ConnectionError):
            self._abort()

    def _abort(self) -> None:
        if isinstance(self._transport, asyncio.WriteTransport):
            self._transport.abort()


def client_address(request: web.Request, settings: Settings) -> str:
    """The client's IP address: the peer's, or behind a trusted proxy the last
    X-Forwarded-For entry (the one that proxy added)."""
    if settings.trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote or "?"


def origin_allowed(request: web.Request, settings: Settings) -> bool:
    """Whether the request's ``Origin`` may open a WebSocket.

    Allowed: no ``Origin`` (not a browser), the server's own origin as the browser addressed it,
    the origin of ``public_url``, and every origin in ``allowed_origins``.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    origin = origin.lower()
    own = f"{request.scheme}://{request.host}".lower()
    return origin == own or origin == settings.public_origin or origin in settings.allowed_origins


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: refuse foreign origins with 403, then serve one signalling connection."""
    settings = request.app[SETTINGS]
    if not origin_allowed(request, settings):
        raise web.HTTPForbidden(text="origin not allowed\n")
    hub = request.app[HUB]
    relay = request.app[RELAY]
    address = client_address(request, settings)
    signin = request.app.get(SIGNIN)
    # Signed in with the identity provider: that identity, unless a join token is given.
    identity = signin.identity(request) if signin is not None else None
    if settings.auth == "jwt" and (identity is None or "token" in request.query):
        try:
            identity = verify_token(request.query.get("token", ""), settings)
            if not identity.allows(normalize_room_name(request.query.get("room", ""))):
                raise AuthError("token refused: another room")
        except (AuthError, InvalidRoomName) as exc:
            # The same answer for every refusal; the reason is for the operator only.
            log.info("websocket refused", extra={"reason": exc.message, "address": address})
            raise web.HTTPUnauthorized(text="a valid token is required\n") from None
    if sum(1 for s in hub.sessions if s.remote == address) >= settings.max_connections_per_address:
        raise web.HTTPTooManyRequests(text="too many connections from your address\n")
    # A subscribe answer grows with the room (a section per track): a frame may be as long as
    # the longest answer the room's size allows, JSON-escaped, or 64 KiB, whichever is more.
    answer = hub.media.config.max_answer_sdp
    frame_limit = max(MAX_MESSAGE_BYTES, answer + answer // 8 + 1024)
    ws = web.WebSocketResponse(
        # aiohttp refuses a frame whose size *equals* max_msg_size: allow exactly the limit.
        max_msg_size=frame_limit + 1,
        heartbeat=settings.ws_heartbeat,
        autoping=True,
        # No permessage-deflate: signalling frames are small, and a zlib context pair per
        # connection (hundreds of KiB) would cost more memory than everything else it holds.
        compress=False,
    )
    await ws.prepare(request)
    CONNECTION.set("c-" + secrets.token_hex(4))
    connection = ClientConnection(ws, request.transport, settings)
    session = hub.connect(
        connection, remote=address, browser_session=browser_session(request), identity=identity
    )
    try:
        await connection.run(session, relay)
    finally:
        # Also reached when aiohttp cancels the handler because the connection was lost.
        reason = connection.loss_reason()
        relay.disconnect(session, reason)
        hub.disconnect(session, reason)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT)
    return ws
