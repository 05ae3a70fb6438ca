"""One participant's media: a *publish* connection the client offers, carrying its own tracks
(:mod:`veche.media.publish`), and a *subscribe* connection the server offers, carrying everyone
else's (:mod:`veche.media.subscribe`).

Each side offers on one connection only, so offers never collide. This module checks what the
client sends (SDP size, candidates), creates both connections with the server's ICE settings and
a connect watchdog, renews one that fails while the other carries on (a viewer whose subscribe
connection fails is still seen and heard by everyone), and closes them.

A subscribe answer has one media section for each track the server forwards, so its size grows
with the room: it may have ``max_sdp`` characters plus :data:`SECTION_SDP` for each section the
room can carry (``max_tracks`` for each of the ``max_members - 1`` others). Candidates count per
connection, that is per transport (every section is bundled onto one), whatever number of
sections repeats them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)
from aiortc.sdp import candidate_from_sdp

from veche.errors import ErrorCode, MediaError
from veche.ids import ParticipantId
from veche.media.candidates import (
    CandidateKey,
    candidate_address_allowed,
    filter_sdp_candidates,
)
from veche.media.codecs import Decoders
from veche.media.counters import MediaCounters
from veche.media.governor import LoadGovernor
from veche.media.internals import bind_ports
from veche.media.pending import PendingConnections
from veche.media.publish import PublishLeg
from veche.media.subscribe import SubscribeLeg
from veche.media.tracks import Uptrack
from veche.protocol import Answer, Candidate, IceServer, Offer, PeerRole, ServerMessage

__all__ = ["SECTION_SDP", "MediaConfig", "MediaPeer"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT: Final = 5.0
"""Seconds to wait for a peer connection to close (aiortc's close can hang)."""

CLOSED_GRACE: Final = 2.0
"""Seconds a connection the client's side closed waits before it counts as failed: a client that
leaves closes its connections and says ``leave`` at about the same time, in either order."""

SECTION_SDP: Final = 2000
"""Characters a subscribe answer may spend on each media section the room can carry: measured,
aiortc's answer takes about 1,200 per section (it repeats its candidates, codecs and ICE and
DTLS attributes in every one) and Chromium's about 550."""


def _no_ice_servers() -> list[IceServer]:
    return []


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """What every peer connection of this server is configured with. ``ice_servers`` is called
    for each new connection (TURN credentials expire)."""

    ice_servers: Callable[[], list[IceServer]] = _no_ice_servers
    relay_only: bool = False
    allow_local_candidates: bool = False
    max_candidates: int = 20
    max_tracks: int = 3
    """Sections of a participant's publish connection that carry a track; more are inactive."""
    max_pending_per_address: int = 4
    """Publish connections one client address may hold before they connect."""
    max_sdp: int = 30000
    """Characters of a publish offer; a subscribe answer may have :data:`SECTION_SDP` more for
    each section the room can carry (see :attr:`max_answer_sdp`)."""
    max_members: int = 50
    """Participants one room may hold (``max_participants``)."""
    connect_timeout: float = 20.0
    port_min: int = 40000
    port_max: int = 40199
    public_ip: str | None = None
    video_codecs: tuple[str, ...] = ("VP8", "H264")
    """Video codecs asked of publishers when the whole room can decode them, best first."""
    max_audio_streams: int = 0
    """Microphones forwarded in one room: the loudest of late when more publish (0: all)."""
    counters: MediaCounters = field(default_factory=MediaCounters)
    """Totals for ``/metrics``, shared by every peer of the router."""
    pending: PendingConnections = field(default_factory=PendingConnections)
    """Publish connections not connected yet, by address, shared by every peer."""
    governor: LoadGovernor = field(default_factory=LoadGovernor)
    """The server's load governor (``governor_lag``), shared by every room."""

    @property
    def max_answer_sdp(self) -> int:
        """Characters of a subscribe answer: ``max_sdp`` and :data:`SECTION_SDP` for each track
        the other members of a full room may publish."""
        return self.max_sdp + SECTION_SDP * self.max_tracks * max(1, self.max_members - 1)


class MediaPeer:
    """The two peer connections of one participant.

    ``send`` delivers a server message to this participant; ``on_publish`` is called with each
    new track the participant publishes and ``on_unpublish`` with each one a codec switch
    replaced; ``on_failed(role, reason)`` when the ``role`` connection fails (ICE or DTLS, it
    closed by itself, as aiortc's does when ICE consent is lost, or it did not connect in time),
    once per connection: whoever renews it (:meth:`renew`) tells the client (``media_failed``
    for that ``pc``, with ``reason``); ``on_refused`` with another participant's track this one
    declined. ``decoders`` is what this participant can decode, ``audience()`` what everyone
    else in its room can. ``address`` is the client's network address: its publish offers are
    refused while it holds ``max_pending_per_address`` connections that never connected.
    ``ceiling(uptrack)`` is the highest simulcast layer the load governor lets this participant
    be sent of ``uptrack`` now (``None``: any).
    """

    def __init__(
        self,
        participant_id: ParticipantId,
        config: MediaConfig,
        *,
        send: Callable[[ServerMessage], None],
        on_publish: Callable[[Uptrack], None],
        on_unpublish: Callable[[Uptrack], None] = lambda uptrack: None,
        on_failed: Callable[[PeerRole, str], None] = lambda role, reason: None,
        on_level: Callable[[int], None] | None = None,
        on_refused: Callable[[Uptrack], None] = lambda uptrack: None,
        decoders: Decoders | None = None,
        audience: Callable[[], list[Decoders]] = list,
        address: str | None = None,
        ceiling: Callable[[Uptrack], int | None] = lambda uptrack: None,
    ) -> None:
        self.participant_id = participant_id
        self.address = address
        self._releases: list[Callable[[], None]] = []
        self.config = config
        self._send = send
        self._on_failed = on_failed

        def publishing() -> PublishLeg:
            return PublishLeg(
                participant_id,
                video_codecs=config.video_codecs,
                max_tracks=config.max_tracks,
                counters=config.counters,
                new_pc=lambda: self._new_pc("publish"),
                bind=self._bind,
                send=send,
                audience=audience,
                on_publish=on_publish,
                on_unpublish=on_unpublish,
                on_level=on_level,
            )

        def subscribing(decoders: Decoders) -> SubscribeLeg:
            return SubscribeLeg(
                participant_id,
                decoders,
                new_pc=lambda: self._new_pc("subscribe"),
                bind=self._bind,
                send=send,
                on_refused=on_refused,
                on_failed=lambda reason: self._on_failed("subscribe", reason),
                ceiling=ceiling,
            )

        self._new_publishing = publishing
        self._new_subscribing = subscribing
        self.publishing = publishing()
        self.subscribing = subscribing(decoders or Decoders())
        self._retired: set[asyncio.Task[None]] = set()
        """Closing connections of legs :meth:`renew` replaced."""
        self._candidates: dict[PeerRole, set[CandidateKey]] = {"publish": set(), "subscribe": set()}
        """Each connection's distinct remote candidates over its lifetime (a re-offer or a new
        answer does not start the count again)."""
        self.closed = False

    @property
    def publish_pc(self) -> RTCPeerConnection | None:
        """The connection this participant publishes on, once it offered."""
        return self.publishing.pc

    @property
    def subscribe_pc(self) -> RTCPeerConnection | None:
        """The connection this participant receives on, once there was something to send."""
        return self.subscribing.pc

    @property
    def uptracks(self) -> list[Uptrack]:
        """The tracks this participant publishes now."""
        return self.publishing.uptracks

    @property
    def decoders(self) -> Decoders:
        """What this participant can decode."""
        return self.subscribing.decoders

    # ---------------------------------------------------------------- messages from the client

    async def handle(self, message: Offer | Answer | Candidate) -> None:
        """Apply a media message from this participant's client. A subscribe answer that is
        refused drops the outstanding offer, so the next change offers again."""
        try:
            await self._handle(message)
        except MediaError:
            if isinstance(message, Answer) and message.pc == "subscribe":
                await self.subscribing.drop_offer()
            raise

    async def _handle(self, message: Offer | Answer | Candidate) -> None:
        if isinstance(message, Offer | Answer):
            limit = self.config.max_answer_sdp if message.type == "answer" else self.config.max_sdp
            if len(message.sdp) > limit:
                raise MediaError(f"the SDP is longer than {limit} characters", ref=message.id)
            sdp = filter_sdp_candidates(
                message.sdp,
                allow_local=self.config.allow_local_candidates,
                limit=self.config.max_candidates,
                seen=self._candidates[message.pc],
            )
            message = message.model_copy(update={"sdp": sdp})
        match message:
            case Offer(pc="publish"):
                await self.publishing.offer(message.sdp, message.sources or {})
            case Answer(pc="subscribe"):
                await self.subscribing.answer(message.sdp)
            case Candidate():
                await self._candidate(message)
            case _:
                raise MediaError(
                    f"a client sends offers only for 'publish' and answers only for "
                    f"'subscribe', not {message.type} for {message.pc!r}",
                    code=ErrorCode.WRONG_STATE,
                    ref=message.id,
                )

    async def _candidate(self, message: Candidate) -> None:
        pc = self.publish_pc if message.pc == "publish" else self.subscribe_pc
        if pc is None or pc.remoteDescription is None:
            before = (
                "the publish offer"
                if message.pc == "publish"
                else "an answer to the server's subscribe offer was applied"
            )
            raise MediaError(
                f"a {message.pc} candidate arrived before {before}",
                code=ErrorCode.WRONG_STATE,
                ref=message.id,
            )
        if not message.candidate:
            return  # end of candidates: aioice does not need to be told
        text = message.candidate.removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(text)
        except (AssertionError, ValueError, IndexError):
            raise MediaError("the ICE candidate could not be parsed", ref=message.id) from None
        if not candidate_address_allowed(
            candidate.ip, allow_local=self.config.allow_local_candidates
        ):
            return  # refused quietly: loopback, link-local, metadata or an unresolved name
        seen = self._candidates[message.pc]
        key = (candidate.ip, candidate.port, candidate.protocol.lower())
        if key not in seen:
            if len(seen) >= self.config.max_candidates:
                raise MediaError(
                    f"at most {self.config.max_candidates} candidates per connection",
                    code=ErrorCode.RATE_LIMITED,
                    ref=message.id,
                )
            seen.add(key)
        candidate.sdpMid = message.sdp_mid
        candidate.sdpMLineIndex = message.sdp_mline_index
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:
            raise MediaError(f"the ICE candidate was refused: {exc}", ref=message.id) from None

    # ---------------------------------------------------------------- forwarding to this peer

    def subscribe(self, uptrack: Uptrack) -> None:
        """Start receiving ``uptrack`` (another participant's track)."""
        self.subscribing.subscribe(uptrack)

    def unsubscribe(self, uptrack: Uptrack) -> None:
        """Stop receiving ``uptrack``."""
        self.subscribing.unsubscribe(uptrack)

    def _bind(self, pc: RTCPeerConnection) -> None:
        bind_ports(pc, self.config.port_min, self.config.port_max, self.config.public_ip)

    # ---------------------------------------------------------------- lifetime

    def _hold_pending(self) -> Callable[[], None]:
        """Count a new publish connection as pending for this client's address, or refuse it
        (before any port is bound) if the address holds its limit already."""
        address = self.address
        if address is None:
            return lambda: None
        limit = self.config.max_pending_per_address
        if self.config.pending.count(address) >= limit:
            log.info(
                "publish refused: pending connections",
                extra={"participant": self.participant_id, "address": address},
            )
            raise MediaError(
                f"at most {limit} media connections per address may be connecting at once",
                code=ErrorCode.RATE_LIMITED,
            )
        release = self.config.pending.hold(address)
        self._releases.append(release)
        return release

    def _new_pc(self, role: PeerRole) -> RTCPeerConnection:
        release = self._hold_pending() if role == "publish" else lambda: None
        # max-bundle: every transceiver shares the first one's transport from the start, so a
        # renegotiation never gathers new candidates (aiortc's default, balanced, also leaves a
        # later transceiver on a transport that bundling then discards).
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=[
                    RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                    for s in self.config.ice_servers()
                ],
                bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                iceTransportPolicy=(
                    RTCIceTransportPolicy.RELAY
                    if self.config.relay_only
                    else RTCIceTransportPolicy.ALL
                ),
            )
        )

        watchdog: asyncio.TimerHandle | None = None
        failed = False

        def fail(reason: str) -> None:
            nonlocal failed
            current = self.publish_pc if role == "publish" else self.subscribe_pc
            if self.closed or failed or pc is not current:
                return  # closed on purpose, failed already, or its leg was renewed
            failed = True
            self._on_failed(role, f"the {role} media connection {reason}")

        def not_connected_in_time() -> None:
            if pc.connectionState in ("new", "connecting"):
                log.info(
                    "media connection timed out",
                    extra={"participant": self.participant_id, "pc": role},
                )
                fail(f"did not connect within {self.config.connect_timeout:g} s (ICE or DTLS)")

        @pc.on("connectionstatechange")
        def on_state() -> None:
            nonlocal watchdog
            state = pc.connectionState
            log.info(
                "media connection state",
                extra={"participant": self.participant_id, "pc": role, "state": state},
            )
            if state in ("connected", "closed", "failed"):
                release()
                if watchdog is not None:
                    watchdog.cancel()
                    watchdog = None
            if state == "failed":
                fail("failed (ICE or DTLS)")
            elif state == "closed":
                # aiortc closes a connection whose DTLS transport closed: ICE consent was lost
                # (under load, for instance), or the client closed it, which it also does as
                # it leaves: a failure only if the participant is still here a moment later.
                asyncio.get_running_loop().call_later(
                    CLOSED_GRACE, fail, "closed (ICE consent or DTLS)"
                )

        # aioice can keep checking for a long time (for ever, without remote candidates): a
        # connection that is not up in time is reported and released, never left "checking".
        watchdog = asyncio.get_running_loop().call_later(
            self.config.connect_timeout, not_connected_in_time
        )
        return pc

    def renew(self, role: PeerRole) -> None:
        """Start the ``role`` connection afresh after it failed: its leg stops (a publish leg's
        tracks end), a new one takes its place and the old connection is closed in the
        background. The other connection carries on untouched."""
        if self.closed:
            return
        pc: RTCPeerConnection | None
        if role == "publish":
            pc = self.publishing.pc
            self.publishing.stop()
            self.publishing = self._new_publishing()
        else:
            old = self.subscribing
            pc = old.pc
            old.stop()
            self.subscribing = self._new_subscribing(old.decoders)
            self._retire(old.settled())
        self._candidates[role] = set()
        if pc is not None:
            self._retire(self._close_pc(pc))

    def _retire(self, closing: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(closing)
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def _close_pc(self, pc: RTCPeerConnection) -> None:
        try:
            await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "peer connection close timed out", extra={"participant": self.participant_id}
            )

    async def close(self) -> None:
        """Stop publishing and subscribing, and close both connections (bounded in time)."""
        if self.closed:
            return
        self.closed = True
        for release in self._releases:
            release()
        self.publishing.stop()
        self.subscribing.stop()
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await self._close_pc(pc)
        await self.subscribing.settled()
        if self._retired:
            await asyncio.gather(*self._retired, return_exceptions=True)
