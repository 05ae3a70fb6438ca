"""The hub routes messages between sessions and rooms, without sockets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from veche.errors import ErrorCode, InvalidRoomName, ProtocolError, Refused
from veche.hub import Hub
from veche.ids import RoomName
from veche.media import MediaConfig
from veche.protocol import (
    SERVER_ADAPTER,
    CloseCode,
    Configure,
    Hello,
    Leave,
    ParticipantJoined,
    ParticipantLeft,
    ServerMessage,
    Update,
    Welcome,
)
from veche.settings import Settings


@dataclass
class Outlet:
    sent: list[ServerMessage] = field(default_factory=list)
    closed: tuple[CloseCode, str] | None = None

    def send(self, message: ServerMessage) -> None:
        self.sent.append(message)

    def send_text(self, text: str) -> None:
        self.sent.append(SERVER_ADAPTER.validate_json(text))

    def close(self, code: CloseCode, reason: str) -> None:
        self.closed = (code, reason)


@pytest.fixture
def hub() -> Hub:
    times = iter(range(1000))
    return Hub(Settings(empty_room_grace=5), media=MediaConfig(), clock=lambda: float(next(times)))


async def test_hello_welcomes_with_configured_ice_servers() -> None:
    """welcome carries the configured ICE servers and a fresh identity."""
    hub = Hub(Settings(ice_servers="turn:turn.internal:3478"), media=MediaConfig())
    outlet = Outlet()
    session = hub.connect(outlet, "127.0.0.1")
    await hub.handle(session, Hello(version=1, room="r", name="Ada"))
    (welcome,) = outlet.sent
    assert isinstance(welcome, Welcome)
    assert welcome.ice_servers[0].urls == ["turn:turn.internal:3478"]
    assert session.participant is not None
    assert welcome.participant_id == session.participant.id


async def test_errors_carry_the_message_id(hub: Hub) -> None:
    """A refused message raises an error whose ref is that message's id."""
    session = hub.connect(Outlet(), "x")
    with pytest.raises(ProtocolError) as caught:
        await hub.handle(session, Update(id="u1", audio=False))
    assert (caught.value.code, caught.value.ref) == (ErrorCode.NOT_JOINED, "u1")
    with pytest.raises(InvalidRoomName) as bad_room:
        await hub.handle(session, Hello(id="h1", version=1, room="../x", name="A"))
    assert bad_room.value.ref == "h1"


async def test_leave_then_disconnect_tells_others_once(hub: Hub) -> None:
    """leave closes with 1000 and notifies once; the later disconnect adds nothing."""
    ada_out, bob_out = Outlet(), Outlet()
    ada, bob = hub.connect(ada_out, "a"), hub.connect(bob_out, "b")
    await hub.handle(ada, Hello(version=1, room="r", name="Ada"))
    await hub.handle(bob, Hello(version=1, room="r", name="Bob"))
    assert isinstance(ada_out.sent[-1], ParticipantJoined)
    await hub.handle(bob, Leave())
    assert bob_out.closed == (CloseCode.NORMAL, "left")
    hub.disconnect(bob, "disconnected")
    lefts = [m for m in ada_out.sent if isinstance(m, ParticipantLeft)]
    assert [m.reason for m in lefts] == ["left"]


async def test_shutdown_closes_every_session_with_1001(hub: Hub) -> None:
    """shutdown asks every connection, joined or not, to close with GOING_AWAY."""
    outlets = [Outlet() for _ in range(3)]
    sessions = [hub.connect(outlet, "x") for outlet in outlets]
    await hub.handle(sessions[0], Hello(version=1, room="r", name="Ada"))
    hub.shutdown()
    assert all(o.closed is not None and o.closed[0] is CloseCode.GOING_AWAY for o in outlets)


async def test_empty_room_is_dropped_after_grace(hub: Hub) -> None:
    """The room survives its grace period after the last leave, then the sweep drops it."""
    session = hub.connect(Outlet(), "x")
    await hub.handle(session, Hello(version=1, room="r", name="Ada"))
    hub.disconnect(session, "disconnected")
    assert len(hub.rooms) == 1
    for _ in range(10):
        hub.sweep()
    assert len(hub.rooms) == 0


async def test_password_set_by_configure_opens_the_room_to_hello(hub: Hub) -> None:
    """A password set with configure (hashed in a worker thread) lets in a hello that gives it
    and answers room_unavailable to one that gives another."""
    ada_outlet = Outlet()
    ada = hub.connect(ada_outlet, "10.0.0.1")
    await hub.handle(ada, Hello(version=1, room="guarded", name="Ada"))
    await hub.handle(ada, Configure(password="open sesame"))
    room = hub.rooms.get(RoomName("guarded"))
    assert room is not None
    assert room.settings.has_password
    eve = hub.connect(Outlet(), "10.0.0.2")
    with pytest.raises(Refused) as caught:
        await hub.handle(eve, Hello(version=1, room="guarded", name="Eve", password="guess"))
    assert caught.value.code is ErrorCode.ROOM_UNAVAILABLE
    bob_outlet = Outlet()
    bob = hub.connect(bob_outlet, "10.0.0.3")
    await hub.handle(bob, Hello(version=1, room="guarded", name="Bob", password="open sesame"))
    assert isinstance(bob_outlet.sent[0], Welcome)


async def test_hello_whose_connection_goes_while_hashing_does_not_join(hub: Hub) -> None:
    """A connection lost while its password is being hashed leaves no participant behind."""
    ada_outlet = Outlet()
    ada = hub.connect(ada_outlet, "10.0.0.1")
    await hub.handle(ada, Hello(version=1, room="guarded", name="Ada"))
    await hub.handle(ada, Configure(password="open sesame"))
    ada_outlet.sent.clear()
    eve = hub.connect(Outlet(), "10.0.0.2")
    joining = asyncio.ensure_future(
        hub.handle(eve, Hello(version=1, room="guarded", name="Eve", password="open sesame"))
    )
    await asyncio.sleep(0)
    hub.disconnect(eve, "disconnected")
    await joining
    assert eve.participant is None
    room = hub.rooms.get(RoomName("guarded"))
    assert room is not None
    assert len(room) == 1
    assert not any(isinstance(m, ParticipantJoined) for m in ada_outlet.sent)
