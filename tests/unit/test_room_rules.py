"""Room rules without sockets: policy, limits, lobby, moderation hand-over, speaker detection."""

from __future__ import annotations

import json

import pytest

from veche.errors import ErrorCode, Refused, RoomFull
from veche.ids import RoomName
from veche.media.speaker import SpeakerDetector
from veche.protocol import (
    MAX_CHAT_LENGTH,
    Asked,
    Chat,
    LobbyUpdated,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    parse_client_message,
)
from veche.rooms import (
    AttemptLimiter,
    Participant,
    Room,
    RoomPolicy,
    RoomRegistry,
    hash_password,
)


def test_policy_keeps_only_a_hash_and_compares_passwords() -> None:
    """A set password is required and checked against attempts hashed with its salt; an
    attempt with another salt fails; clearing it opens the room again."""
    policy = RoomPolicy()
    assert policy.password_matches(None)
    assert policy.salt is None
    policy.password = hash_password("s3cret")
    assert policy.has_password
    assert "s3cret" not in repr(policy)
    assert policy.salt is not None
    assert policy.password_matches(hash_password("s3cret", policy.salt))
    assert not policy.password_matches(hash_password("S3cret", policy.salt))
    assert not policy.password_matches(hash_password("s3cret"))
    assert not policy.password_matches(None)
    policy.password = None
    assert policy.password_matches(None)


def test_room_configure_is_rate_limited_per_room() -> None:
    """A room's settings change five times at once, then once a second (rate_limited in
    between); only moderators may spend them."""
    room = Room(RoomName("r"), capacity=10, now=0)
    ada, _ = room.join("Ada", now=0)
    bob, _ = room.join("Bob", now=0)
    for _ in range(5):
        room.allow_configure(ada.id, now=0)
    with pytest.raises(Refused) as caught:
        room.allow_configure(ada.id, now=0.5)
    assert caught.value.code is ErrorCode.RATE_LIMITED
    room.allow_configure(ada.id, now=1.5)
    with pytest.raises(Refused) as caught:
        room.allow_configure(bob.id, now=10)
    assert caught.value.code is ErrorCode.FORBIDDEN
    other = Room(RoomName("other"), capacity=10, now=0)
    carol, _ = other.join("Carol", now=0)
    other.allow_configure(carol.id, now=0.5)


def test_room_configure_sets_and_clears_a_hashed_password() -> None:
    """configure takes the password's hash ("" removes it) and tells everyone has_password."""
    room = Room(RoomName("r"), capacity=10, now=0)
    ada, _ = room.join("Ada", now=0)
    hashed = hash_password("s3cret")
    (delivery,) = room.configure(ada.id, password=hashed).deliveries
    assert json.loads(delivery.message.model_dump_json())["settings"]["has_password"] is True
    assert room.admits(hash_password("s3cret", hashed.salt), None)
    assert not room.admits(None, None)
    room.configure(ada.id, locked=True)
    assert room.policy.password == hashed
    room.configure(ada.id, password="", locked=False)
    assert room.admits(None, None)


def test_registry_counts_refused_joins_per_room_and_address() -> None:
    """Five refused joins at one room lock that address out of that room only: it joins an
    open room at once, and another address still gets the plain refusal."""
    rooms = RoomRegistry(capacity=10, grace=10)
    _, ada, _ = rooms.join(RoomName("guarded"), "Ada", now=0)
    guarded = rooms.get(RoomName("guarded"))
    assert guarded is not None
    guarded.configure(ada.id, password=hash_password("right"))
    salt = guarded.policy.salt
    for n in range(5):
        with pytest.raises(Refused) as caught:
            rooms.join(
                RoomName("guarded"),
                "Eve",
                now=1,
                password=hash_password(f"guess {n}", salt),
                address="10.0.0.7",
            )
        assert caught.value.code is ErrorCode.ROOM_UNAVAILABLE
    room, student, _ = rooms.join(RoomName("open"), "Student", now=2, address="10.0.0.7")
    assert student.id in room
    with pytest.raises(Refused) as caught:
        rooms.check_attempts(RoomName("guarded"), address="10.0.0.7", now=2)
    assert caught.value.code is ErrorCode.RATE_LIMITED
    with pytest.raises(Refused) as caught:
        rooms.join(
            RoomName("guarded"),
            "Eve",
            now=2,
            password=hash_password("right", salt),
            address="10.0.0.7",
        )
    assert caught.value.code is ErrorCode.RATE_LIMITED
    with pytest.raises(Refused) as caught:
        rooms.join(RoomName("guarded"), "Mallory", now=2, address="10.0.0.8")
    assert caught.value.code is ErrorCode.ROOM_UNAVAILABLE
    rooms.join(
        RoomName("guarded"),
        "Eve",
        now=61,
        password=hash_password("right", salt),
        address="10.0.0.7",
    )


def test_registry_never_creates_a_room_for_a_given_password() -> None:
    """A hello with a password names an existing room: none is created for it."""
    rooms = RoomRegistry(capacity=10, grace=10)
    with pytest.raises(Refused) as caught:
        rooms.join(RoomName("nowhere"), "Eve", now=0, password_given=True)
    assert caught.value.code is ErrorCode.ROOM_UNAVAILABLE
    assert RoomName("nowhere") not in rooms


def test_attempt_limiter_slides() -> None:
    """Attempts beyond the limit block until the window has passed."""
    limiter = AttemptLimiter(limit=2, window=10)
    limiter.record("a", now=0)
    limiter.record("a", now=1)
    assert limiter.blocked("a", now=5)
    assert not limiter.blocked("b", now=5)
    assert not limiter.blocked("a", now=10.5)


def test_attempt_limiter_sweep_forgets_keys_past_the_window() -> None:
    """Keys whose last attempt is older than the window are forgotten; newer ones stay."""
    limiter = AttemptLimiter(limit=2, window=10)
    limiter.record(("room-a", "10.0.0.7"), now=0)
    limiter.record(("room-b", "10.0.0.7"), now=5)
    limiter.sweep(now=12)
    assert len(limiter) == 1
    assert not limiter.blocked(("room-a", "10.0.0.7"), now=12)
    limiter.sweep(now=15)
    assert len(limiter) == 0


def test_chat_over_the_limit_parses_and_the_room_refuses_it_as_too_long() -> None:
    """One character over MAX_CHAT_LENGTH is a valid message that the room answers with
    too_long; the limit counts the text after control characters are dropped."""
    message = parse_client_message(
        json.dumps({"type": "chat", "text": "x" * (MAX_CHAT_LENGTH + 1)})
    )
    assert isinstance(message, Chat)
    room = Room(RoomName("r"), capacity=10, now=0)
    ada, _ = room.join("Ada", now=0)
    with pytest.raises(Refused) as caught:
        room.post(ada.id, message.text, now=1)
    assert caught.value.code is ErrorCode.TOO_LONG
    (delivery,) = room.post(ada.id, "\x07" + "x" * MAX_CHAT_LENGTH, now=2).deliveries
    assert room.chat_history[-1].text == "x" * MAX_CHAT_LENGTH
    assert delivery.to == (ada.id,)


def test_lobby_waiter_gets_nothing_and_moderators_are_told() -> None:
    """With the lobby on, a newcomer is not a participant; only moderators hear of it."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    guest, _ = room.join("Guest", now=1)
    room.configure(host.id, lobby=True)
    waiter, waits = room.join("Waiter", now=2)
    assert waiter.id not in room
    assert waits.admitted == ()
    assert [(d.to, type(d.message)) for d in waits.deliveries] == [((host.id,), LobbyUpdated)]
    outcome = room.admit(host.id, waiter.id, everyone=False)
    assert outcome.admitted == (waiter,)
    joined = [d for d in outcome.deliveries if isinstance(d.message, ParticipantJoined)]
    assert joined[0].to == (host.id, guest.id)


def test_only_moderators_moderate() -> None:
    """A participant's moderation raises forbidden and changes nothing."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    guest, _ = room.join("Guest", now=1)
    with pytest.raises(Refused) as caught:
        room.moderate(guest.id, "mute", host.id, now=2)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert host.audio


def test_moderator_hand_over_goes_to_longest_present() -> None:
    """The last moderator leaving promotes the participant who joined first."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    first, _ = room.join("First", now=1)
    room.join("Second", now=2)
    outcome = room.leave(host.id, "left", now=3)
    promoted = [d.message for d in outcome.deliveries if isinstance(d.message, ParticipantUpdated)]
    assert promoted[0].participant.id == first.id
    assert first.role == "moderator"


def test_speaker_detector_picks_the_loud_one_with_hysteresis() -> None:
    """The loudest speaking participant is the speaker; a slightly louder one does not take
    over; silence keeps the last speaker; stale levels drop out."""
    detector = SpeakerDetector()
    for step in range(50):
        now = step * 0.02
        detector.add("loud", 20, now=now)
        detector.add("quiet", 127, now=now)
    assert detector.speaker(now=1.0) == "loud"
    for step in range(50, 100):
        now = step * 0.02
        detector.add("loud", 30, now=now)
        detector.add("other", 27, now=now)
    assert detector.speaker(now=2.0) == "loud"
    for step in range(100, 150):
        now = step * 0.02
        detector.add("loud", 127, now=now)
        detector.add("other", 20, now=now)
    assert detector.speaker(now=3.0) == "other"
    assert detector.speaker(now=10.0) == "other"
    detector.forget("other")
    assert detector.speaker(now=10.0) is None


def test_a_lost_participant_stays_reconnecting_without_its_screen() -> None:
    """``disconnect`` keeps the participant (role and state) and tells everyone it is
    reconnecting; its shared screen stops; ``reconnect`` clears the mark."""
    room = Room(RoomName("r"), capacity=10, now=0)
    ada, _ = room.join("Ada", now=0)
    bob, _ = room.join("Bob", now=1)
    room.share_screen(bob.id, True)
    deliveries = room.disconnect(bob.id).deliveries
    assert bob.id in room
    assert len(deliveries) == 1
    assert set(deliveries[0].to) == {ada.id, bob.id}
    message = deliveries[0].message
    assert isinstance(message, ParticipantUpdated)
    assert message.participant.reconnecting is True
    assert message.participant.screen is False
    room.share_screen(ada.id, True)  # the screen is free again
    back = room.reconnect(bob.id).deliveries[0].message
    assert isinstance(back, ParticipantUpdated)
    assert back.participant.reconnecting is False
    assert back.participant.role == "participant"


def test_the_last_one_out_turns_the_lobby_away() -> None:
    """When the last participant leaves, nobody can admit those waiting: they are let go
    (``denied``) in the same outcome."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    room.configure(host.id, lobby=True)
    waiter, _ = room.join("Waiter", now=1)
    outcome = room.leave(host.id, "left", now=2)
    assert outcome.dismissed == ((waiter, "denied"),)
    assert room.waiting == []


def test_removal_and_the_end_let_people_go_with_their_reason() -> None:
    """A moderator's ``remove`` lets its target go as ``removed``; ending the meeting lets
    everyone, present and waiting, go as ``ended``."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    guest, _ = room.join("Guest", now=1)
    other, _ = room.join("Other", now=2)
    removed = room.moderate(host.id, "remove", guest.id, now=3)
    assert removed.dismissed == ((guest, "removed"),)
    assert [type(d.message) for d in removed.deliveries] == [ParticipantLeft]
    room.configure(host.id, lobby=True)
    waiter, _ = room.join("Waiter", now=4)
    ended = room.end(host.id)
    assert {(p.id, why) for p, why in ended.dismissed} == {
        (host.id, "ended"),
        (other.id, "ended"),
        (waiter.id, "ended"),
    }


def test_chat_drops_bidirectional_controls_and_keeps_text_lines_and_emoji() -> None:
    """Overrides, embeddings, isolates and bidi marks are removed; words, line breaks and emoji
    (zero-width joiners and variation selectors included) stay."""
    room = Room(RoomName("r"), capacity=10, now=0)
    ada, _ = room.join("Ada", now=0)
    controls = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f"
    room.post(
        ada.id,
        f"invoice\u202efdp.exe{controls}\nline two {family} \u043f\u0440\u0438\u0432\u0435\u0442",
        now=1,
    )
    assert (
        room.chat_history[-1].text
        == f"invoicefdp.exe\nline two {family} \u043f\u0440\u0438\u0432\u0435\u0442"
    )


def test_lobby_full_refuses_while_waiters_take_no_place_in_the_room() -> None:
    """People waiting do not count toward capacity; the lobby refuses past ``max_waiting`` with
    room_full, and admitting stops at capacity."""
    room = Room(RoomName("r"), capacity=3, now=0, max_waiting=2)
    host, _ = room.join("Host", now=0)
    room.configure(host.id, lobby=True)
    first, _ = room.join("First", now=1)
    second, _ = room.join("Second", now=2)
    with pytest.raises(RoomFull) as caught:
        room.join("Third", now=3)
    assert "lobby is full" in caught.value.message
    assert caught.value.code is ErrorCode.ROOM_FULL
    assert [p.id for p in room.waiting] == [first.id, second.id]
    # A moderator from a token skips the lobby and takes the place the waiters did not.
    guest, _ = room.join("Guest", now=4, moderator=True)
    assert guest.id in room
    outcome = room.admit(host.id, None, everyone=True)
    assert outcome.admitted == (first,)
    assert [p.id for p in room.waiting] == [second.id]
    with pytest.raises(RoomFull):
        room.admit(host.id, second.id, everyone=False)
    room.leave(guest.id, "left", now=5)
    assert room.admit(host.id, second.id, everyone=False).admitted == (second,)
    assert len(room) == 3


def test_moderators_the_host_promoted_cannot_remove_it() -> None:
    """The room's first moderator made another one moderator: that one cannot remove the host
    (``forbidden``, nobody leaves), while the host can remove it."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    student, _ = room.join("Student", now=1)
    room.moderate(host.id, "make_moderator", student.id, now=2)
    with pytest.raises(Refused) as caught:
        room.moderate(student.id, "remove", host.id, now=3)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert host.id in room
    removed = room.moderate(host.id, "remove", student.id, now=4)
    assert removed.dismissed == ((student, "removed"),)


def test_the_host_role_passes_to_the_longest_present_moderator() -> None:
    """When the host leaves, the longest-present moderator is the host (and is protected);
    an emptied room has no host until someone enters."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    first, _ = room.join("First", now=1)
    second, _ = room.join("Second", now=2)
    room.moderate(host.id, "make_moderator", second.id, now=3)
    room.moderate(host.id, "make_moderator", first.id, now=3)
    room.leave(host.id, "left", now=4)
    assert room.host_id == first.id
    with pytest.raises(Refused):
        room.moderate(second.id, "remove", first.id, now=5)
    room.leave(first.id, "left", now=6)
    room.leave(second.id, "left", now=7)
    assert room.host_id is None
    newcomer, _ = room.join("New", now=8)
    assert room.host_id == newcomer.id


def test_the_loudest_keep_their_place_through_a_pause() -> None:
    """Those speaking now come first, loudest first; someone who paused keeps a place for
    ``HOLD`` seconds over those who never spoke; after that the speaking ones replace it. A
    silent microphone takes no place even when there is room."""
    detector = SpeakerDetector()
    for n in range(50):
        now = n * 0.02
        detector.add("loud", 20, now=now)
        detector.add("soft", 40, now=now)
        detector.add("quiet", 127, now=now)
    assert detector.loudest(1, now=1.0) == {"loud"}
    assert detector.loudest(2, now=1.0) == {"loud", "soft"}
    assert detector.loudest(3, now=1.0) == {"loud", "soft"}  # silence is never forwarded
    for n in range(50, 100):  # "loud" pauses, "quiet" starts speaking softly
        now = n * 0.02
        detector.add("loud", 127, now=now)
        detector.add("soft", 40, now=now)
        detector.add("quiet", 45, now=now)
    assert detector.loudest(2, now=2.0) == {"soft", "quiet"}
    for n in range(100, 110):
        detector.add("loud", 127, now=n * 0.02)
        detector.add("soft", 127, now=n * 0.02)
    # "soft" paused 0.2 s ago: it keeps its place; "loud" has been quiet for 1 s: also held.
    assert "soft" in detector.loudest(2, now=2.2)
    assert detector.loudest(3, now=2.2) == {"loud", "soft", "quiet"}


def _room_of_three() -> tuple[Room, Participant, Participant, Participant]:
    room = Room(RoomName("class"), capacity=10, now=0)
    teacher, _ = room.join("Teacher", now=0)
    ann, _ = room.join("Ann", now=0)
    ben, _ = room.join("Ben", now=0)
    return room, teacher, ann, ben


def test_mute_all_and_lower_all_hands_touch_only_what_changes() -> None:
    """``mute`` mutes every participant but the moderators (blocked under 'moderator must
    allow'); ``lower_hand`` lowers every raised hand; each change is heard once; only a
    moderator may."""
    room, teacher, ann, ben = _room_of_three()
    room.configure(teacher.id, moderator_must_allow=True)
    room.update(ben.id, audio=False, video=None)
    room.raise_hand(ann.id, True, now=1)
    room.raise_hand(teacher.id, True, now=2)
    outcome = room.moderate_all(teacher.id, "mute")
    changed = [d.message.participant.id for d in outcome.deliveries]  # type: ignore[union-attr]
    assert changed == [ann.id, ben.id]
    assert teacher.audio
    assert not ann.audio
    assert ann.audio_blocked
    assert ben.audio_blocked
    assert room.moderate_all(teacher.id, "mute").deliveries == ()
    lowered = room.moderate_all(teacher.id, "lower_hand")
    assert len(lowered.deliveries) == 2
    assert ann.hand_raised_at is None
    assert teacher.hand_raised_at is None
    with pytest.raises(Refused) as caught:
        room.moderate_all(ann.id, "mute")
    assert caught.value.code is ErrorCode.FORBIDDEN


def test_ask_to_unmute_allows_and_asks_only_the_one_asked() -> None:
    room, teacher, ann, _ = _room_of_three()
    room.configure(teacher.id, moderator_must_allow=True)
    room.moderate(teacher.id, "mute", ann.id, now=1)
    outcome = room.moderate(teacher.id, "ask_unmute", ann.id, now=2)
    asked = [d for d in outcome.deliveries if isinstance(d.message, Asked)]
    assert [(d.to, d.message.by) for d in asked] == [((ann.id,), "Teacher")]  # type: ignore[attr-defined]
    assert not ann.audio_blocked
    assert not ann.audio  # only Ann turns her microphone on
    room.raise_hand(ann.id, True, now=3)
    room.moderate(teacher.id, "lower_hand", ann.id, now=4)
    assert ann.hand_raised_at is None


def test_a_message_to_the_moderators_reaches_only_them_and_its_sender() -> None:
    room, teacher, ann, ben = _room_of_three()
    outcome = room.post(ann.id, "may I leave early?", now=1, to="moderators")
    (delivery,) = outcome.deliveries
    assert set(delivery.to) == {teacher.id, ann.id}
    assert delivery.message.entry.to == "moderators"  # type: ignore[union-attr]
    room.post(ben.id, "hello all", now=2)
    assert [e.text for e in room.chat_history_for(ben)] == ["hello all"]
    assert [e.text for e in room.chat_history_for(ann)] == ["may I leave early?", "hello all"]
    assert len(room.chat_history_for(teacher)) == 2


def test_subscribe_offers_are_spaced_by_the_square_of_their_size() -> None:
    """A small connection is offered again almost at once, a 50-person room's after ~8 s, no
    connection after more than 10 s: a room's renegotiations cost it about the same share of
    a core at any size."""
    from veche.media.subscribe import offer_gap

    assert offer_gap(2) < 0.01
    assert 0.1 < offer_gap(16) < 0.3
    assert 7 < offer_gap(98) < 8.5
    assert offer_gap(1000) == 10
    # The cost of a room's offers per second: members x sections / gap, sections ~ 2 members.
    assert 32 * 62 / offer_gap(62) == pytest.approx(50 * 98 / offer_gap(98), rel=0.5)
