"""A room's lasting state without sockets or disk: what its record keeps, how a restored room
brings its people back, and that nobody inherits a moderator's role while it is expected."""

from __future__ import annotations

import pytest

from veche.errors import ErrorCode, Refused, RoomFull
from veche.ids import RoomName
from veche.protocol import LobbyUpdated, ParticipantUpdated
from veche.rooms import Room, RoomRecord, hash_password, member_keys


def _restart(room: Room, *, now: float = 100.0, capacity: int = 10) -> Room:
    """The room as a new process reads it back: through its record's JSON."""
    record = RoomRecord.model_validate_json(room.record().model_dump_json())
    return Room.restored(room.name, record, room.chat_history, capacity=capacity, now=now)


def _teacher_and_student() -> tuple[Room, str, str]:
    room = Room(RoomName("seminar"), capacity=10, now=0)
    teacher, _ = room.join("Teacher", now=0, session="teacher-browser")
    student, _ = room.join("Student", now=1, session="student-browser")
    room.configure(teacher.id, lobby=True, password=hash_password("pw"))
    room.post(teacher.id, "hello", now=2)
    return room, teacher.resume_token, student.resume_token


def test_the_record_keeps_settings_and_keys_but_no_secret_in_clear() -> None:
    """Settings, the password's hash, the host and every member by key; no resume token,
    browser session or password in clear."""
    room, teacher_token, student_token = _teacher_and_student()
    text = room.record().model_dump_json()
    record = RoomRecord.model_validate_json(text)
    assert record.lobby
    assert record.password_digest is not None
    teacher_key = member_keys(subject=None, resume_token=teacher_token)[0]
    student_key = member_keys(subject=None, resume_token=student_token)[0]
    assert record.members == {teacher_key: "moderator", student_key: "participant"}
    assert record.host == teacher_key
    for secret in (teacher_token, student_token, "pw", "teacher-browser"):
        assert secret not in text


def test_whoever_comes_back_first_does_not_inherit_the_moderator() -> None:
    """After a restart the student returns first (no password, no lobby: it was admitted)
    and stays a participant; the teacher returns as moderator and host; a stranger who never
    was in the room finds the password and the lobby."""
    room, teacher_token, student_token = _teacher_and_student()
    restored = _restart(room)
    assert restored.settings.has_password
    assert [entry.text for entry in restored.chat_history] == ["hello"]
    student_key = restored.remembered_key(
        member_keys(subject=None, resume_token=student_token), "student-browser"
    )
    assert student_key is not None
    student, outcome = restored.rejoin(student_key, "Student", now=101)
    assert outcome.admitted == (student,)
    assert student.role == "participant"
    assert restored.host_id is None
    # A stranger with the password waits: a moderator is expected back to admit it.
    assert restored.admits(hash_password("pw", restored.policy.salt), None)
    assert not restored.admits(None, None)
    stranger, waited = restored.join("Stranger", now=102)
    assert stranger.id not in restored
    assert waited.admitted == ()
    teacher_key = restored.remembered_key(
        member_keys(subject=None, resume_token=teacher_token), None
    )
    assert teacher_key is not None
    teacher, _ = restored.rejoin(teacher_key, "Teacher", now=103)
    assert teacher.role == "moderator"
    assert restored.host_id == teacher.id
    assert not restored.expecting_moderator
    assert [p.name for p in restored.waiting] == ["Stranger"]
    # Each key brings back one person, once.
    assert restored.remembered_key([teacher_key, student_key], None) is None


def test_a_promoted_moderator_coming_back_first_is_not_the_host() -> None:
    """A moderator the host promoted returns first: moderator again, but the host (when back)
    is the host and cannot be removed by it."""
    room = Room(RoomName("r"), capacity=10, now=0)
    host, _ = room.join("Host", now=0)
    helper, _ = room.join("Helper", now=0)
    room.moderate(host.id, "make_moderator", helper.id, now=0)
    restored = _restart(room)
    helper_back, _ = restored.rejoin(helper.key, "Helper", now=101)
    assert helper_back.role == "moderator"
    assert restored.host_id is None
    host_back, _ = restored.rejoin(host.key, "Host", now=102)
    assert restored.host_id == host_back.id
    with pytest.raises(Refused) as caught:
        restored.moderate(helper_back.id, "remove", host_back.id, now=103)
    assert caught.value.code is ErrorCode.FORBIDDEN


def test_when_the_moderator_does_not_come_back_the_longest_present_takes_over() -> None:
    room, _, student_token = _teacher_and_student()
    restored = _restart(room)
    key = member_keys(subject=None, resume_token=student_token)[0]
    student, _ = restored.rejoin(key, "Student", now=101)
    late, _ = restored.join("Late", now=102)  # waits: the lobby is on
    outcome = restored.stop_expecting()
    assert student.role == "moderator"
    assert restored.host_id == student.id
    messages = [delivery.message for delivery in outcome.deliveries]
    assert any(
        isinstance(m, ParticipantUpdated) and m.participant.id == student.id for m in messages
    )
    lobby = [m for m in messages if isinstance(m, LobbyUpdated)]
    assert [[w.id for w in m.waiting] for m in lobby] == [[late.id]]


def test_an_empty_restored_room_lets_its_first_waiter_in_when_nobody_returns() -> None:
    room, _, _ = _teacher_and_student()
    restored = _restart(room)
    first, _ = restored.join("First", now=101)
    second, _ = restored.join("Second", now=102)
    assert len(restored) == 0
    outcome = restored.stop_expecting()
    assert outcome.admitted == (first,)
    assert first.role == "moderator"
    assert [p.id for p in restored.waiting] == [second.id]


def test_removed_sessions_stay_removed_and_token_subjects_are_remembered() -> None:
    """A removed browser session cannot come back after a restart, even with a member key; a
    token's subject is the key of whoever joined with one; a full room refuses a returner."""
    room = Room(RoomName("r"), capacity=3, now=0)
    room.join("Teacher", now=0, subject="t@example.org")
    pest, _ = room.join("Pest", now=0, session="pest-browser")
    friend, _ = room.join("Friend", now=0)
    room.expel(pest.id, now=1)
    restored = _restart(room, capacity=1)
    assert not restored.admits(None, "pest-browser")
    keys = member_keys(subject="t@example.org", resume_token="not-the-last-one")
    assert restored.remembered_key(keys, "pest-browser") is None
    key = restored.remembered_key(keys, None)
    assert key == "sub:t@example.org"
    back, _ = restored.rejoin(key, "Teacher", now=101, subject="t@example.org")
    assert back.role == "moderator"
    with pytest.raises(RoomFull):
        restored.rejoin(friend.key, "Friend", now=102)
