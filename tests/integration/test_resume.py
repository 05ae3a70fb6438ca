"""Resuming after a lost connection: the same participant comes back within the grace period,
the others see "reconnecting" and never a leave and a join; after it, a new join."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from veche.app import create_app
from veche.client import VecheClient
from veche.protocol import (
    CloseCode,
    Goodbye,
    ParticipantLeft,
    ParticipantUpdated,
    ServerMessage,
    Welcome,
)

Open = Callable[..., Awaitable[VecheClient]]


@pytest.fixture
async def open_client(
    aiohttp_client: Any, make_settings: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Open]:
    """``await open_client()`` connects a VecheClient to a server with the test's settings
    (``@pytest.mark.settings(...)``; the resume grace is 1 s unless given)."""
    marker = request.node.get_closest_marker("settings")
    overrides = {"resume_grace": 1.0, **(marker.kwargs if marker else {})}
    client: TestClient[Any, Any] = await aiohttp_client(create_app(make_settings(**overrides)))
    url = f"ws://{client.host}:{client.port}/ws"
    opened: list[VecheClient] = []

    async def open_one(cookie: str | None = None) -> VecheClient:
        connection = await VecheClient.connect(url, cookie=cookie)
        opened.append(connection)
        return connection

    yield open_one
    for connection in opened:
        await connection.ws.close()


async def updated(client: VecheClient, participant_id: str) -> ParticipantUpdated:
    """The next ``participant_updated`` about ``participant_id``; fails if it leaves first."""
    async with asyncio.timeout(5):
        while True:
            message = await client.receive()
            assert not (
                isinstance(message, ParticipantLeft) and message.participant_id == participant_id
            ), message
            if isinstance(message, ParticipantUpdated) and message.participant.id == participant_id:
                return message


async def next_of(client: VecheClient, kind: str, timeout: float = 5.0) -> ServerMessage:
    return await client.expect(kind, timeout=timeout)


async def test_lost_connection_resumes_as_the_same_participant(open_client: Open) -> None:
    ada = await open_client()
    await ada.join("blip", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("blip", "Bob")
    await next_of(ada, "participant_joined")

    bob.drop()
    away = await updated(ada, bob_welcome.participant_id)
    assert away.participant.reconnecting is True

    bob_again = await open_client()
    welcome = await bob_again.join("blip", "Bob", resume=bob_welcome.resume_token)
    assert welcome.resumed is True
    assert welcome.participant_id == bob_welcome.participant_id
    assert welcome.resume_token != bob_welcome.resume_token, "the token is renewed"
    me = next(p for p in welcome.participants if p.id == welcome.participant_id)
    assert me.reconnecting is False
    back = await updated(ada, bob_welcome.participant_id)
    assert back.participant.reconnecting is False
    # Well past the grace period nothing more happens: Bob stays.
    await asyncio.sleep(1.3)
    await ada.send({"type": "chat", "text": "still here?"})
    posted = await next_of(bob_again, "chat_posted")
    assert posted.type == "chat_posted"


async def test_state_and_role_survive_a_resume(open_client: Open) -> None:
    """A moderator's mute under 'moderator must allow' and the moderator role are kept."""
    ada = await open_client()
    ada_welcome = await ada.join("kept", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("kept", "Bob")
    await ada.send({"type": "configure", "moderator_must_allow": True})
    await ada.send(
        {"type": "moderate", "action": "mute", "participant_id": bob_welcome.participant_id}
    )
    await updated(ada, bob_welcome.participant_id)

    bob.drop()
    ada.drop()
    await asyncio.sleep(0.2)
    bob = await open_client()
    bob_back = await bob.join("kept", "Bob", resume=bob_welcome.resume_token)
    ada = await open_client()
    ada_back = await ada.join("kept", "Ada", resume=ada_welcome.resume_token)
    roster = {p.id: p for p in ada_back.participants}
    assert bob_back.resumed
    assert ada_back.resumed
    assert roster[ada_welcome.participant_id].role == "moderator"
    assert roster[bob_welcome.participant_id].audio is False
    assert roster[bob_welcome.participant_id].audio_blocked is True
    await bob.send({"type": "update", "audio": True, "id": "unmute"})
    refused = await next_of(bob, "error")
    assert refused.type == "error"
    assert refused.code == "forbidden"


async def test_after_the_grace_period_the_participant_is_removed_and_joins_as_new(
    open_client: Open,
) -> None:
    ada = await open_client()
    await ada.join("gone", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("gone", "Bob")
    bob.drop()
    await updated(ada, bob_welcome.participant_id)
    left = await next_of(ada, "participant_left", timeout=3)
    assert isinstance(left, ParticipantLeft)
    assert (left.participant_id, left.reason) == (bob_welcome.participant_id, "timeout")

    bob = await open_client()
    welcome = await bob.join("gone", "Bob", resume=bob_welcome.resume_token)
    assert welcome.resumed is False
    assert welcome.participant_id != bob_welcome.participant_id
    joined = await next_of(ada, "participant_joined")
    assert joined.type == "participant_joined"
    assert joined.participant.id == welcome.participant_id


async def test_a_close_frame_is_a_leave_but_reconnecting_is_not(open_client: Open) -> None:
    ada = await open_client()
    await ada.join("closes", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("closes", "Bob")
    await bob.ws.close()  # 1000: the client chose to go
    left = await next_of(ada, "participant_left")
    assert isinstance(left, ParticipantLeft)
    assert left.reason == "disconnected"

    cyd = await open_client()
    cyd_welcome = await cyd.join("closes", "Cyd")
    await next_of(ada, "participant_joined")
    await cyd.ws.close(code=CloseCode.RECONNECTING)
    away = await updated(ada, cyd_welcome.participant_id)
    assert away.participant.reconnecting is True
    assert bob_welcome.participant_id not in {p.id for p in cyd_welcome.participants}


async def test_resume_while_the_old_connection_still_looks_alive(open_client: Open) -> None:
    """The server has not noticed the loss yet: the new connection takes over, the old one gets
    'replaced', and the others see no leave and no join."""
    ada = await open_client()
    await ada.join("takeover", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("takeover", "Bob")
    await next_of(ada, "participant_joined")

    bob_new = await open_client()
    welcome = await bob_new.join("takeover", "Bob", resume=bob_welcome.resume_token)
    assert welcome.resumed
    assert welcome.participant_id == bob_welcome.participant_id
    goodbye = await next_of(bob, "goodbye")
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason == "replaced"
    await ada.send({"type": "ping", "id": "after"})
    async with asyncio.timeout(3):
        while (message := await ada.receive()).type != "pong":
            assert message.type not in ("participant_left", "participant_joined"), message
    # The old socket closing now changes nothing.
    await bob.ws.close()
    await bob_new.send({"type": "chat", "text": "hello again"})
    posted = await next_of(ada, "chat_posted")
    assert posted.type == "chat_posted"
    assert posted.entry.participant_id == welcome.participant_id


@pytest.mark.parametrize("case", ["reused", "other room", "garbage"])
async def test_a_token_that_names_nobody_here_is_a_new_join(open_client: Open, case: str) -> None:
    bob = await open_client()
    first = await bob.join("tokens", "Bob")
    token = first.resume_token
    if case == "reused":
        bob.drop()
        bob = await open_client()
        assert (await bob.join("tokens", "Bob", resume=token)).resumed
    other = await open_client()
    room = "elsewhere" if case == "other room" else "tokens"
    welcome: Welcome = await other.join(
        room, "Eve", resume="x" * 32 if case == "garbage" else token
    )
    assert welcome.resumed is False
    assert welcome.participant_id != first.participant_id


async def test_a_locked_room_still_takes_back_its_own(open_client: Open) -> None:
    ada = await open_client()
    await ada.join("locked", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("locked", "Bob")
    await ada.send({"type": "configure", "locked": True})
    bob.drop()
    bob = await open_client()
    assert (await bob.join("locked", "Bob", resume=bob_welcome.resume_token)).resumed
    stranger = await open_client()
    await stranger.send({"type": "hello", "version": 1, "room": "locked", "name": "Eve"})
    refused = await next_of(stranger, "error")
    assert refused.type == "error"
    assert refused.code == "room_unavailable"


async def test_removing_someone_who_is_reconnecting_ends_it(open_client: Open) -> None:
    ada = await open_client(cookie="veche_session=ada-session-0123456789")
    await ada.join("rm", "Ada")
    bob = await open_client(cookie="veche_session=bob-session-0123456789")
    bob_welcome = await bob.join("rm", "Bob")
    bob.drop()
    await updated(ada, bob_welcome.participant_id)
    await ada.send(
        {"type": "moderate", "action": "remove", "participant_id": bob_welcome.participant_id}
    )
    left = await next_of(ada, "participant_left")
    assert isinstance(left, ParticipantLeft)
    assert left.reason == "removed"
    bob = await open_client(cookie="veche_session=bob-session-0123456789")
    await bob.send(
        {
            "type": "hello",
            "version": 1,
            "room": "rm",
            "name": "Bob",
            "resume": bob_welcome.resume_token,
        }
    )
    goodbye = await next_of(bob, "goodbye")  # the goodbye it missed while away
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason == "removed"
    bob = await open_client(cookie="veche_session=bob-session-0123456789")
    await bob.send({"type": "hello", "version": 1, "room": "rm", "name": "Bob"})
    refused = await next_of(bob, "error")
    assert refused.type == "error"
    assert refused.code == "room_unavailable"


@pytest.mark.settings(resume_grace=0)
async def test_no_grace_means_a_lost_connection_leaves_at_once(open_client: Open) -> None:
    ada = await open_client()
    await ada.join("nograce", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("nograce", "Bob")
    bob.drop()
    left = await next_of(ada, "participant_left")
    assert isinstance(left, ParticipantLeft)
    assert (left.participant_id, left.reason) == (bob_welcome.participant_id, "timeout")


@pytest.mark.parametrize("ending", ["ended", "removed"])
async def test_a_participant_ended_while_away_is_told_so_when_it_comes_back(
    open_client: Open, ending: str
) -> None:
    """The meeting ends (or a moderator removes Bob) while Bob's connection is lost, so the
    goodbye has nowhere to go: Bob coming back with its resume token hears that goodbye and is
    closed, rather than joining a new meeting of the same name (or the old one) as a stranger."""
    ada = await open_client()
    await ada.join("ending", "Ada")
    bob = await open_client()
    bob_welcome = await bob.join("ending", "Bob")
    await next_of(ada, "participant_joined")
    bob.drop()
    assert (await updated(ada, bob_welcome.participant_id)).participant.reconnecting
    if ending == "ended":
        await ada.send({"type": "end_meeting"})
        assert isinstance(await next_of(ada, "goodbye"), Goodbye)
    else:
        await ada.send(
            {"type": "moderate", "action": "remove", "participant_id": bob_welcome.participant_id}
        )
        await next_of(ada, "participant_left")

    bob_again = await open_client()
    await bob_again.send(
        {
            "type": "hello",
            "version": 1,
            "room": "ending",
            "name": "Bob",
            "resume": bob_welcome.resume_token,
        }
    )
    goodbye = await next_of(bob_again, "goodbye")
    assert isinstance(goodbye, Goodbye)
    assert goodbye.reason == ending
    async with asyncio.timeout(5):
        await bob_again.ws.wait_closed()
    assert bob_again.ws.close_code == CloseCode.NORMAL
    # Said once: the same token again is a newcomer (in a new meeting, after "ended").
    third = await open_client()
    welcome = await third.join("ending", "Bob", resume=bob_welcome.resume_token)
    assert welcome.resumed is False
