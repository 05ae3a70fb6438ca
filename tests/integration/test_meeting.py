"""Meeting features at the protocol level: chat, hands, reactions, screen share, roles,
moderation, lobby, password and lock. Driven in-process with aiohttp's test client."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from veche.app import create_app

from .wsutil import expect, expect_where, no_message, ping_ok, recv

Client = TestClient[Any, Any]
Ws = ClientWebSocketResponse
_sessions = itertools.count(1)


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Client:
    result: Client = await aiohttp_client(create_app(make_settings()))
    return result


Join = Callable[..., Awaitable[tuple[Ws, dict[str, Any]]]]


@pytest.fixture
def join(client: Client) -> Join:
    """Open a connection with its own browser session cookie and say hello."""

    async def connect(
        room: str, name: str, *, session: str | None = None, password: str | None = None
    ) -> tuple[Ws, dict[str, Any]]:
        cookie = session or f"test-session-{next(_sessions):08d}"
        ws = await client.ws_connect("/ws", headers={"Cookie": f"veche_session={cookie}"})
        hello: dict[str, Any] = {"type": "hello", "version": 1, "room": room, "name": name}
        if password is not None:
            hello["password"] = password
        await ws.send_json(hello)
        return ws, await recv(ws)

    return connect


async def _error(ws: Ws, message: dict[str, Any]) -> str:
    await ws.send_json(message)
    reply = await expect(ws, "error")
    return str(reply["code"])


# ------------------------------------------------------------------ chat, hands, reactions


async def test_chat_reaches_everyone_as_plain_text_and_late_joiners_get_history(
    join: Join,
) -> None:
    """A chat message is stamped with the sender's id and name by the server, delivered to all
    (sender included) unchanged, and kept for whoever joins later."""
    ada, welcome = await join("chat", "Ada")
    bob, _ = await join("chat", "Bob")
    await expect(ada, "participant_joined")
    markup = "<img src=x onerror=alert(1)>"
    await bob.send_json({"type": "chat", "text": markup})
    for ws in (ada, bob):
        entry = (await expect(ws, "chat_posted"))["entry"]
        assert entry["text"] == markup
        assert entry["name"] == "Bob"
    _cyd, cyd_welcome = await join("chat", "Cyd")
    assert [e["text"] for e in cyd_welcome["chat"]] == [markup]
    assert welcome["chat"] == []


async def test_chat_over_the_limit_is_refused(join: Join) -> None:
    """More than 2000 characters gets too_long and is not delivered."""
    ada, _ = await join("long", "Ada")
    assert await _error(ada, {"type": "chat", "text": "x" * 2001}) == "too_long"
    assert await _error(ada, {"type": "chat", "text": " \n "}) == "bad_message"
    await ping_ok(ada)


async def test_hands_are_ordered_by_time_and_visible_to_all(join: Join) -> None:
    """Raising a hand stamps the time; lowering clears it; everyone sees both."""
    ada, _ = await join("hands", "Ada")
    bob, _ = await join("hands", "Bob")
    await expect(ada, "participant_joined")
    await bob.send_json({"type": "hand", "raised": True})
    raised = (await expect(ada, "participant_updated"))["participant"]
    assert raised["name"] == "Bob"
    assert raised["hand_raised_at"] is not None
    await expect(bob, "participant_updated")
    await ada.send_json({"type": "hand", "raised": True})
    mine = (await expect(bob, "participant_updated"))["participant"]
    assert mine["name"] == "Ada"
    assert mine["hand_raised_at"] >= raised["hand_raised_at"]
    await expect(ada, "participant_updated")
    await bob.send_json({"type": "hand", "raised": False})
    lowered = (await expect(ada, "participant_updated"))["participant"]
    assert lowered["name"] == "Bob"
    assert lowered.get("hand_raised_at") is None


async def test_reactions_are_broadcast_and_rate_limited(join: Join) -> None:
    """A reaction reaches everyone; four quick ones all pass, a stream of them is
    rate_limited; only the fixed set is accepted."""
    ada, welcome = await join("react", "Ada")
    bob, _ = await join("react", "Bob")
    await bob.send_json({"type": "react", "emoji": "🎉"})
    reacted = await expect(ada, "reacted")
    assert reacted["emoji"] == "🎉"
    for emoji in ("👍", "👏", "😂", "😮"):
        await bob.send_json({"type": "react", "emoji": emoji})
        assert (await expect(ada, "reacted"))["emoji"] == emoji
    assert await _error(bob, {"type": "react", "emoji": "👍"}) == "rate_limited"
    assert await _error(bob, {"type": "react", "emoji": "💩"}) == "bad_message"
    assert welcome["participant_id"] != reacted["participant_id"]


async def test_one_screen_sharer_at_a_time(join: Join) -> None:
    """A second sharer gets screen_busy; once the first stops, the second may share."""
    ada, _ = await join("screen", "Ada")
    bob, _ = await join("screen", "Bob")
    await ada.send_json({"type": "screen_share", "active": True})
    shared = (await expect(bob, "participant_updated"))["participant"]
    assert shared["screen"] is True
    assert await _error(bob, {"type": "screen_share", "active": True}) == "screen_busy"
    await ada.send_json({"type": "screen_share", "active": False})
    await expect(bob, "participant_updated")
    await bob.send_json({"type": "screen_share", "active": True})
    assert (await expect(ada, "participant_updated"))["participant"]["screen"] is True


# ------------------------------------------------------------------ roles and moderation


async def test_first_participant_is_moderator(join: Join) -> None:
    """The first participant of a new room moderates it; the next does not."""
    _ada, welcome = await join("roles", "Ada")
    _, bob_welcome = await join("roles", "Bob")
    roles = {p["name"]: p["role"] for p in bob_welcome["participants"]}
    assert roles == {"Ada": "moderator", "Bob": "participant"}
    assert welcome["participants"][0]["role"] == "moderator"


NON_MODERATOR_ACTIONS: list[dict[str, Any]] = [
    {"type": "moderate", "action": "mute", "participant_id": "TARGET"},
    {"type": "moderate", "action": "camera_off", "participant_id": "TARGET"},
    {"type": "moderate", "action": "allow_unmute", "participant_id": "TARGET"},
    {"type": "moderate", "action": "remove", "participant_id": "TARGET"},
    {"type": "moderate", "action": "make_moderator", "participant_id": "SELF"},
    {"type": "configure", "locked": True},
    {"type": "configure", "lobby": True},
    {"type": "configure", "password": "secret"},
    {"type": "admit", "all": True},
    {"type": "deny", "all": True},
    {"type": "end_meeting"},
]


@pytest.mark.parametrize("action", NON_MODERATOR_ACTIONS, ids=lambda a: str(list(a.values())[:2]))
async def test_moderator_actions_are_forbidden_to_others(
    join: Join, action: dict[str, Any]
) -> None:
    """Each moderator action by a participant gets forbidden and changes nothing."""
    ada, ada_welcome = await join("forbid", "Ada")
    bob, bob_welcome = await join("forbid", "Bob")
    await expect(ada, "participant_joined")
    message = {
        key: (
            ada_welcome["participant_id"]
            if value == "TARGET"
            else bob_welcome["participant_id"]
            if value == "SELF"
            else value
        )
        for key, value in action.items()
    }
    assert await _error(bob, message) == "forbidden"
    await no_message(ada)
    await ping_ok(ada)
    _, eve_welcome = await join("forbid", "Eve")
    assert {p["name"]: p["role"] for p in eve_welcome["participants"]} == {
        "Ada": "moderator",
        "Bob": "participant",
        "Eve": "participant",
    }


async def test_moderator_mute_and_must_allow(join: Join) -> None:
    """A moderator mutes someone; with 'moderator must allow' they cannot unmute until
    allowed; without it they can."""
    ada, _ = await join("mute", "Ada")
    bob, bob_welcome = await join("mute", "Bob")
    bob_id = bob_welcome["participant_id"]
    await ada.send_json({"type": "configure", "moderator_must_allow": True})
    assert (await expect(bob, "room_updated"))["settings"]["moderator_must_allow"] is True
    await ada.send_json({"type": "moderate", "action": "mute", "participant_id": bob_id})
    muted = (await expect(bob, "participant_updated"))["participant"]
    assert (muted["audio"], muted["audio_blocked"]) == (False, True)
    assert await _error(bob, {"type": "update", "audio": True}) == "forbidden"
    await ada.send_json({"type": "moderate", "action": "allow_unmute", "participant_id": bob_id})
    assert (await expect(bob, "participant_updated"))["participant"]["audio_blocked"] is False
    await bob.send_json({"type": "update", "audio": True})
    await expect_where(
        ada,
        "participant_updated",
        lambda m: m["participant"]["id"] == bob_id and m["participant"]["audio"] is True,
    )
    await ada.send_json({"type": "moderate", "action": "camera_off", "participant_id": bob_id})
    await expect_where(bob, "participant_updated", lambda m: m["participant"]["video"] is False)


async def test_removed_participant_cannot_return_with_same_session(join: Join) -> None:
    """remove: goodbye, the socket closes, and the same browser session is refused (with the
    answer everyone outside gets)."""
    ada, _ = await join("remove", "Ada")
    bob, bob_welcome = await join("remove", "Bob", session="bob-browser-session-1")
    await expect(ada, "participant_joined")
    await ada.send_json(
        {"type": "moderate", "action": "remove", "participant_id": bob_welcome["participant_id"]}
    )
    assert await recv(bob) == {"type": "goodbye", "reason": "removed"}
    assert (await bob.receive(timeout=3)).type is WSMsgType.CLOSE
    left = await expect(ada, "participant_left")
    assert left["reason"] == "removed"
    again, reply = await join("remove", "Bob", session="bob-browser-session-1")
    assert (reply["type"], reply["code"]) == ("error", "room_unavailable")
    await again.close()


async def test_moderator_role_passes_to_longest_present(join: Join) -> None:
    """When the last moderator leaves, the longest-present participant becomes moderator."""
    ada, _ = await join("handover", "Ada")
    _bob, bob_welcome = await join("handover", "Bob")
    cyd, _ = await join("handover", "Cyd")
    await ada.close()
    updated = (await expect(cyd, "participant_updated"))["participant"]
    assert (updated["id"], updated["role"]) == (bob_welcome["participant_id"], "moderator")


async def test_make_moderator_shares_the_role(join: Join) -> None:
    """A moderator can make another participant a moderator, who can then moderate."""
    ada, _ = await join("share", "Ada")
    bob, bob_welcome = await join("share", "Bob")
    await ada.send_json(
        {
            "type": "moderate",
            "action": "make_moderator",
            "participant_id": bob_welcome["participant_id"],
        }
    )
    assert (await expect(bob, "participant_updated"))["participant"]["role"] == "moderator"
    await bob.send_json({"type": "configure", "locked": True})
    assert (await expect(ada, "room_updated"))["settings"]["locked"] is True


async def test_a_promoted_moderator_cannot_remove_the_host(join: Join) -> None:
    """A moderator the host made cannot remove the host (``forbidden``); the host stays and can
    still remove that moderator."""
    ada, ada_welcome = await join("host", "Ada")
    bob, bob_welcome = await join("host", "Bob")
    bob_id = bob_welcome["participant_id"]
    await ada.send_json({"type": "moderate", "action": "make_moderator", "participant_id": bob_id})
    assert (await expect(bob, "participant_updated"))["participant"]["role"] == "moderator"
    remove_ada = {
        "type": "moderate",
        "action": "remove",
        "participant_id": ada_welcome["participant_id"],
    }
    assert await _error(bob, remove_ada) == "forbidden"
    await ada.send_json({"type": "moderate", "action": "remove", "participant_id": bob_id})
    assert (await expect(bob, "goodbye"))["reason"] == "removed"
    left = await expect(ada, "participant_left")
    assert (left["participant_id"], left["reason"]) == (bob_id, "removed")


async def test_end_meeting_dismisses_everyone(join: Join) -> None:
    """end_meeting: everyone gets goodbye 'ended' and is disconnected; the room is gone."""
    ada, _ = await join("end", "Ada")
    bob, _ = await join("end", "Bob")
    await ada.send_json({"type": "end_meeting"})
    for ws in (ada, bob):
        assert (await expect(ws, "goodbye"))["reason"] == "ended"
        assert (await ws.receive(timeout=3)).type is WSMsgType.CLOSE
    _cyd, welcome = await join("end", "Cyd")
    assert welcome["type"] == "welcome"
    assert [p["name"] for p in welcome["participants"]] == ["Cyd"]


# ------------------------------------------------------------------ entry: lock, password, lobby


async def test_lock_password_and_missing_room_give_one_answer(join: Join) -> None:
    """A locked room, a wrong or missing password and a room that does not exist all answer
    room_unavailable; the right password gets in."""
    ada, _ = await join("guarded", "Ada")
    await ada.send_json({"type": "configure", "password": "open sesame"})
    assert (await expect(ada, "room_updated"))["settings"]["has_password"] is True
    answers = []
    for password in (None, "wrong"):
        ws, reply = await join("guarded", "Eve", password=password)
        answers.append((reply["code"], reply["message"]))
        await ws.close()
    ws, reply = await join("no-such-room", "Eve", password="open sesame")
    answers.append((reply["code"], reply["message"]))
    await ws.close()
    await ada.send_json({"type": "configure", "locked": True})
    await expect(ada, "room_updated")
    ws, reply = await join("guarded", "Eve", password="open sesame")
    answers.append((reply["code"], reply["message"]))
    await ws.close()
    assert len(set(answers)) == 1
    assert answers[0][0] == "room_unavailable"
    await ada.send_json({"type": "configure", "locked": False})
    await expect(ada, "room_updated")
    _bob, welcome = await join("guarded", "Bob", password="open sesame")
    assert welcome["type"] == "welcome"


async def test_a_missing_room_answers_as_slowly_as_a_wrong_password(join: Join) -> None:
    """A password is hashed whether or not its room exists, so the time of the refusal does
    not tell which rooms exist (median of four tries each; the hash takes tens of ms)."""
    ada, _ = await join("timed", "Ada")
    await ada.send_json({"type": "configure", "password": "open sesame"})
    await expect(ada, "room_updated")

    async def refusal(room: str) -> float:
        start = time.perf_counter()
        ws, reply = await join(room, "Eve", password="wrong")
        elapsed = time.perf_counter() - start
        assert reply["code"] == "room_unavailable"
        await ws.close()
        return elapsed

    wrong = [await refusal("timed") for _ in range(4)]
    missing = [await refusal(f"nowhere-{n}") for n in range(4)]
    print(
        f"\nwrong password {statistics.median(wrong) * 1000:.1f} ms, missing room "
        f"{statistics.median(missing) * 1000:.1f} ms"
    )
    assert statistics.median(missing) >= 0.5 * statistics.median(wrong)


async def test_refused_joins_are_rate_limited_per_room_and_address(join: Join) -> None:
    """After five refused attempts at a room from one address, that address still joins
    another, open room at once, while a sixth attempt at the first (even with the right
    password) is rate_limited."""
    ada, _ = await join("brute", "Ada")
    await ada.send_json({"type": "configure", "password": "correct horse"})
    await expect(ada, "room_updated")
    for attempt in range(5):
        ws, reply = await join("brute", "Eve", password=f"guess {attempt}")
        assert reply["code"] == "room_unavailable"
        await ws.close()
    _student, welcome = await join("lecture", "Student")
    assert welcome["type"] == "welcome"
    ws, reply = await join("brute", "Eve", password="correct horse")
    assert reply["code"] == "rate_limited"


async def test_lobby_admit_deny_and_nothing_leaks_to_waiters(join: Join) -> None:
    """With the lobby on, newcomers wait, see nothing of the room and can do nothing but wait;
    moderators see them and admit or deny them."""
    ada, _ = await join("lobby", "Ada")
    bob, _ = await join("lobby", "Bob")
    await expect(ada, "participant_joined")
    await ada.send_json({"type": "configure", "lobby": True})
    await expect(bob, "room_updated")

    eve, reply = await join("lobby", "Eve")
    assert reply == {"type": "waiting", "for_host": False}  # waits for admission
    lobby = await expect(ada, "lobby_updated")
    assert [w["name"] for w in lobby["waiting"]] == ["Eve"]
    eve_id = lobby["waiting"][0]["id"]
    await no_message(bob)  # a participant who is not a moderator is not told
    for attempt in (
        {"type": "chat", "text": "let me in"},
        {"type": "offer", "pc": "publish", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"},
        {"type": "update", "audio": False},
        {"type": "hand", "raised": True},
        {"type": "screen_share", "active": True},
        {"type": "moderate", "action": "remove", "participant_id": eve_id},
    ):
        assert await _error(eve, attempt) == "not_admitted"
    await ada.send_json({"type": "chat", "text": "secret plans"})
    await expect(bob, "chat_posted")
    await no_message(eve)

    await ada.send_json({"type": "admit", "participant_id": eve_id})
    welcome = await recv(eve)
    assert welcome["type"] == "welcome"
    assert [e["text"] for e in welcome["chat"]] == ["secret plans"]
    assert (await expect(bob, "participant_joined"))["participant"]["name"] == "Eve"

    mal, reply = await join("lobby", "Mal")
    assert reply == {"type": "waiting", "for_host": False}  # waits for admission
    mal_id = (await expect_where(ada, "lobby_updated", lambda m: bool(m["waiting"])))["waiting"][0][
        "id"
    ]
    await ada.send_json({"type": "deny", "participant_id": mal_id})
    assert await recv(mal) == {"type": "goodbye", "reason": "denied"}
    assert (await mal.receive(timeout=3)).type is WSMsgType.CLOSE


async def test_lobby_admit_all_and_turning_it_off_lets_everyone_in(join: Join) -> None:
    """admit all lets every waiting person in; turning the lobby off does too."""
    ada, _ = await join("crowd", "Ada")
    await ada.send_json({"type": "configure", "lobby": True})
    await expect(ada, "room_updated")
    waiting = [await join("crowd", f"W{i}") for i in range(3)]
    await ada.send_json({"type": "admit", "all": True})
    for ws, reply in waiting:
        assert reply["type"] == "waiting"
        assert (await recv(ws))["type"] == "welcome"
    late, reply = await join("crowd", "Late")
    assert reply["type"] == "waiting"
    await ada.send_json({"type": "configure", "lobby": False})
    assert (await recv(late))["type"] == "welcome"


# ------------------------------------------------------------------ teaching tools


async def _drain(ws: Ws, within: float = 0.3) -> list[dict[str, Any]]:
    """Every message that arrives within ``within`` seconds."""
    received = []
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        if msg.type != WSMsgType.TEXT:
            break
        received.append(msg.json())
    return received


async def test_teaching_tools_over_the_wire(join: Join) -> None:
    """A private question reaches the moderator and not the class; mute all and lower all
    reach everyone; ask to unmute reaches only the one asked; a participant may not mute all;
    ``can_record`` is false without ``recording_dir``."""
    teacher, welcome = await join("lesson", "Teacher")
    assert welcome["can_record"] is False
    ann, ann_welcome = await join("lesson", "Ann")
    ben, _ = await join("lesson", "Ben")
    await _drain(teacher)
    await _drain(ann)
    await ann.send_json({"type": "chat", "text": "I do not understand", "to": "moderators"})
    posted = await expect(teacher, "chat_posted")
    assert posted["entry"]["to"] == "moderators"
    assert (await expect(ann, "chat_posted"))["entry"]["text"] == "I do not understand"
    assert "chat_posted" not in [m["type"] for m in await _drain(ben)]

    await ben.send_json({"type": "hand", "raised": True})
    await expect(teacher, "participant_updated")
    await _drain(ben)
    await _drain(ann)
    assert await _error(ann, {"type": "moderate_all", "action": "mute"}) == "forbidden"
    await teacher.send_json({"type": "moderate_all", "action": "mute"})
    updates = [m for m in await _drain(ben) if m["type"] == "participant_updated"]
    assert sorted(m["participant"]["name"] for m in updates) == ["Ann", "Ben"]
    assert all(m["participant"]["audio"] is False for m in updates)
    await _drain(ann)
    await teacher.send_json({"type": "moderate_all", "action": "lower_hand"})
    (lowered,) = [m for m in await _drain(ann) if m["type"] == "participant_updated"]
    assert lowered["participant"]["name"] == "Ben"
    assert lowered["participant"].get("hand_raised_at") is None

    await _drain(ben)
    ann_id = ann_welcome["participant_id"]
    await teacher.send_json({"type": "moderate", "action": "ask_unmute", "participant_id": ann_id})
    asked = await expect(ann, "asked")
    assert (asked["request"], asked["by"]) == ("unmute", "Teacher")
    assert "asked" not in [m["type"] for m in await _drain(ben)]
