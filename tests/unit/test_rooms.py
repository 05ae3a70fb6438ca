"""Room rules: names, joining and leaving, who hears what, capacity and the grace period."""

from __future__ import annotations

import re
import unicodedata

import pytest

from veche.errors import ErrorCode, InvalidRoomName, Refused, RoomFull
from veche.ids import RoomName
from veche.protocol import ParticipantJoined, ParticipantLeft, ParticipantUpdated
from veche.rooms import (
    Outcome,
    Room,
    RoomRegistry,
    clean_display_name,
    generate_room_name,
    normalize_room_name,
)

HOSTILE_NAMES = [
    "",
    "../x",
    "..",
    "...",
    "a/b",
    "a\\b",
    "%2e%2e",
    "x" * 65,
    "bad\x00name",
    "evil\u202etxt",
    "zero\u200bwidth",
    "<script>",
    "a b",
    "tab\there",
    "new\nline",
    "émoji😀",
    "semi;colon",
    "q?uery",
    "hash#tag",
]


@pytest.mark.parametrize("raw", HOSTILE_NAMES, ids=repr)
def test_normalize_room_name_rejects_hostile_name(raw: str) -> None:
    """Names that could traverse paths, hide text or inject markup are refused."""
    with pytest.raises(InvalidRoomName):
        normalize_room_name(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("team", "team"),
        ("Team-Standup", "team-standup"),
        ("\uff34\uff25\uff21\uff2d", "team"),  # full-width TEAM
        ("встреча_1", "встреча_1"),
        ("réunion.2026", "réunion.2026"),
        ("x" * 64, "x" * 64),
        ("a..b", "a..b"),
    ],
)
def test_normalize_room_name_accepts_and_canonicalises(raw: str, expected: str) -> None:
    """Letters of any script, digits and -_. pass; case and width fold to one canonical form."""
    assert normalize_room_name(raw) == expected


def test_generate_room_name_is_readable_and_random() -> None:
    """Generated names are five groups of four unambiguous characters (over 96 bits), all
    valid, and do not repeat."""
    names = {generate_room_name() for _ in range(500)}
    assert len(names) == 500
    for name in names:
        assert re.fullmatch(r"[2-9a-hjkmnp-tv-z]{4}(-[2-9a-hjkmnp-tv-z]{4}){4}", name)
        assert normalize_room_name(name) == name
    alphabet = set("".join(names).replace("-", ""))
    assert len(alphabet) == 30
    assert 20 * __import__("math").log2(len(alphabet)) >= 96


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ada   Lovelace ", "Ada Lovelace"),
        ("x" * 100, "x" * 64),
        ("evil\u202eemanresu", "evilemanresu"),
        ("bell\x07", "bell"),
        ("\u200b", "Guest"),
        ("", "Guest"),
    ],
)
def test_clean_display_name(raw: str, expected: str) -> None:
    """Display names lose control/format characters and are cut to 64 characters."""
    cleaned = clean_display_name(raw)
    assert cleaned == expected
    assert all(unicodedata.category(c)[0] != "C" for c in cleaned)


def test_join_tells_others_and_not_the_joiner() -> None:
    """participant_joined goes to everyone already present, never to the newcomer."""
    room = Room(RoomName("r"), capacity=5, now=0)
    ada, joined = room.join("Ada", now=1)
    assert joined.deliveries == ()
    assert joined.admitted == (ada,)
    bob, joined = room.join("Bob", now=2)
    second = joined.deliveries
    assert len(second) == 1
    assert second[0].to == (ada.id,)
    assert isinstance(second[0].message, ParticipantJoined)
    assert second[0].message.participant.id == bob.id
    assert [p.id for p in room.participants] == [ada.id, bob.id]


def test_leave_tells_the_rest_and_marks_room_empty() -> None:
    """participant_left goes to those who remain; the last one out starts the grace clock."""
    room = Room(RoomName("r"), capacity=5, now=0)
    ada, _ = room.join("Ada", now=1)
    bob, _ = room.join("Bob", now=2)
    deliveries = room.leave(bob.id, "left", now=3).deliveries
    assert deliveries[0].to == (ada.id,)
    assert deliveries[0].message == ParticipantLeft(participant_id=bob.id, reason="left")
    assert room.empty_since is None
    assert room.leave(ada.id, "disconnected", now=4) == Outcome()
    assert room.empty_since == 4
    assert room.leave(ada.id, "left", now=5) == Outcome()


def test_update_tells_everyone_only_on_change() -> None:
    """participant_updated reaches everyone, the sender included, and only when state changes."""
    room = Room(RoomName("r"), capacity=5, now=0)
    ada, _ = room.join("Ada", now=1)
    bob, _ = room.join("Bob", now=2)
    deliveries = room.update(ada.id, audio=False, video=None).deliveries
    assert deliveries[0].to == (ada.id, bob.id)
    message = deliveries[0].message
    assert isinstance(message, ParticipantUpdated)
    assert (message.participant.audio, message.participant.video) == (False, True)
    assert room.update(ada.id, audio=False, video=None) == Outcome()


def test_quick_reactions_pass_and_a_stream_of_them_is_refused() -> None:
    """Four reactions in two seconds are ordinary use and all reach the room; a stream of them
    is refused with rate_limited, and a second's pause allows one again."""
    room = Room(RoomName("r"), capacity=5, now=0)
    ada, _ = room.join("Ada", now=1)
    room.join("Bob", now=1)
    for now in (10.0, 10.5, 11.0, 11.5):
        assert room.react(ada.id, "👍", now=now).deliveries
    room.react(ada.id, "🎉", now=11.6)
    room.react(ada.id, "🎉", now=11.61)
    for step in range(8):
        with pytest.raises(Refused) as refused:
            room.react(ada.id, "🎉", now=11.62 + step * 0.01)
        assert refused.value.code == ErrorCode.RATE_LIMITED
    assert room.react(ada.id, "👏", now=13.2).deliveries


def test_full_room_refuses_join() -> None:
    """A room at capacity raises RoomFull and keeps its participants."""
    room = Room(RoomName("r"), capacity=2, now=0)
    room.join("Ada", now=1)
    room.join("Bob", now=1)
    with pytest.raises(RoomFull):
        room.join("Eve", now=2)
    assert len(room) == 2


def test_participant_ids_are_unique_and_server_made() -> None:
    """Every participant gets a distinct random id and resume token."""
    room = Room(RoomName("r"), capacity=100, now=0)
    people = [room.join("x", now=0)[0] for _ in range(100)]
    assert len({p.id for p in people}) == 100
    assert len({p.resume_token for p in people}) == 100
    assert all(p.id.startswith("p-") and len(p.id) >= 12 for p in people)


def test_registry_creates_room_on_first_join() -> None:
    """Joining an unknown name creates the room; a second join reuses it."""
    rooms = RoomRegistry(capacity=5, grace=10)
    first, _, _ = rooms.join(RoomName("r"), "Ada", now=0)
    second, _, _ = rooms.join(RoomName("r"), "Bob", now=1)
    assert first is second
    assert len(rooms) == 1
    assert rooms.participant_count == 2


def test_registry_drops_room_after_grace_period() -> None:
    """An empty room survives the grace period and is dropped once it has passed."""
    rooms = RoomRegistry(capacity=5, grace=10)
    room, ada, _ = rooms.join(RoomName("r"), "Ada", now=0)
    room.leave(ada.id, "left", now=100)
    assert rooms.sweep(now=109) == []
    assert RoomName("r") in rooms
    assert rooms.sweep(now=110) == [RoomName("r")]
    assert RoomName("r") not in rooms


def test_registry_keeps_room_rejoined_within_grace() -> None:
    """Someone joining during the grace period cancels the drop."""
    rooms = RoomRegistry(capacity=5, grace=10)
    room, ada, _ = rooms.join(RoomName("r"), "Ada", now=0)
    room.leave(ada.id, "left", now=100)
    rooms.join(RoomName("r"), "Ada", now=105)
    assert rooms.sweep(now=200) == []


def test_registry_full_room_answers_room_full() -> None:
    """A join beyond capacity raises RoomFull through the registry."""
    rooms = RoomRegistry(capacity=1, grace=10)
    rooms.join(RoomName("r"), "Ada", now=0)
    with pytest.raises(RoomFull):
        rooms.join(RoomName("r"), "Bob", now=0)
