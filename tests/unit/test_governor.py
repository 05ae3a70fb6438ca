"""The load governor without sockets: levels rise with sustained lag and fall with hysteresis,
only unimportant video is governed, a subscriber's layer never exceeds the ceiling, and a video
forwarded as keyframes only stays decodable."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from tests.unit.test_forwarding import DELTA, KEY, SSRC, VP8, FakeTime, FakeWriter, _packet
from tests.unit.test_temporal import Received, Stream
from veche.ids import ParticipantId, RoomName
from veche.media.codecs import Decoders
from veche.media.governor import BITRATES, GovernorPolicy, LoadGovernor, governed
from veche.media.peer import MediaConfig
from veche.media.recvbuf import PACKET_COST, waiting_seconds
from veche.media.rewriter import StreamRewriter
from veche.media.room import MediaRoom
from veche.media.subscribe import SubscribeLeg
from veche.media.tracks import KEYFRAME_INTERVAL, Downtrack, SenderFeed, Uptrack
from veche.media.udpstats import UdpBacklog, parse_udp_table

POLICY = GovernorPolicy(threshold=0.05, rise=1.0, fall=5.0)


def _feed(governor: LoadGovernor, lag: float, times: Iterable[float]) -> list[int]:
    """Observe ``lag`` at each of ``times``; the level after each sample."""
    levels = []
    for now in times:
        governor.observe(lag, now)
        levels.append(governor.level)
    return levels


def _ticks(start: float, end: float, step: float = 0.25) -> list[float]:
    count = round((end - start) / step)
    return [start + i * step for i in range(count + 1)]


def test_governor_rises_one_step_per_second_of_sustained_lag() -> None:
    """Lag above the threshold raises the level once it lasted ``rise`` seconds, then one step
    per further ``rise``, up to the top level."""
    governor = LoadGovernor(POLICY)
    levels = _feed(governor, 0.2, _ticks(0, 5))
    assert levels[:4] == [0, 0, 0, 0]
    assert levels[4] == 1  # at 1.0 s
    assert levels[8] == 2  # at 2.0 s
    assert levels[12] == 3
    assert max(levels) == 3
    assert governor.engagements == 1


def test_governor_ignores_a_short_spike() -> None:
    """One late timer (a garbage collection, a burst of joins) degrades nothing."""
    governor = LoadGovernor(POLICY)
    _feed(governor, 0.5, _ticks(0, 0.5))
    _feed(governor, 0.0, _ticks(0.75, 3))
    assert governor.level == 0
    assert governor.engagements == 0


def test_governor_falls_only_after_a_calm_hold_and_not_in_the_dead_band() -> None:
    """Lag between half the threshold and the threshold keeps the level (hysteresis); below
    half of it the level falls one step per ``fall`` seconds."""
    governor = LoadGovernor(POLICY)
    _feed(governor, 0.2, _ticks(0, 2))
    assert governor.level == 2
    _feed(governor, 0.04, _ticks(2.25, 20))
    assert governor.level == 2
    levels = _feed(governor, 0.0, _ticks(20.25, 31))
    assert levels[: round(4.75 / 0.25)] == [2] * round(4.75 / 0.25)
    assert governor.level == 0
    assert governor.engagements == 1


def test_governor_off_never_degrades() -> None:
    """A threshold of 0 keeps level 0 whatever the lag."""
    governor = LoadGovernor(GovernorPolicy(threshold=0))
    _feed(governor, 5.0, _ticks(0, 10))
    assert governor.level == 0
    assert governor.lag == 5.0


@pytest.mark.parametrize(
    ("kind", "source", "owner", "expected"),
    [
        ("audio", "microphone", "a", False),
        ("video", "screen", "a", False),
        ("video", "camera", "speaker", False),
        ("video", "camera", "a", True),
    ],
)
def test_only_unimportant_video_is_governed(
    kind: str, source: str, owner: str, expected: bool
) -> None:
    """Never audio, a shared screen or the active speaker's camera."""
    assert governed(kind, source, owner, "speaker") is expected


def test_ceiling_and_bitrate_follow_the_level_for_unimportant_video_only() -> None:
    """Important video has neither a ceiling nor a bitrate cap at any level."""
    governor = LoadGovernor(POLICY)
    assert governor.ceiling(False) is None
    assert governor.bitrate(False) is None
    _feed(governor, 0.2, _ticks(0, 3))
    assert governor.level == 3
    assert governor.ceiling(False) == 0
    assert governor.bitrate(False) == BITRATES[3]
    assert governor.ceiling(True) is None
    assert governor.bitrate(True) is None


def test_frame_rate_goes_down_before_the_lowest_layer_for_unimportant_video_only() -> None:
    """Unimportant simulcast video is sent 15 fps (TID <= 1) from level 1 and 7.5 fps (TID 0)
    at level 3, each level sending less than the one below it; important video all its
    temporal layers at every level."""
    governor = LoadGovernor(POLICY)
    seen = []
    for level in range(4):
        governor.pin(level)
        governor.observe(0.0, float(level))
        assert governor.level == level
        seen.append((governor.ceiling(False), governor.temporal(False)))
        assert governor.temporal(True) is None
    assert seen == [(None, None), (1, 1), (0, 1), (0, 0)]


def test_a_pinned_governor_holds_its_level_whatever_the_load() -> None:
    """Pinned, the level is the pinned one at the next sample, calm or overloaded; unpinned,
    the load decides again from there (it falls after the calm hold)."""
    governor = LoadGovernor(POLICY)
    governor.pin(2)
    assert governor.observe(0.0, 0.0)
    assert governor.level == 2
    assert _feed(governor, 0.0, _ticks(0.25, 20)) == [2] * 80
    assert _feed(governor, 0.5, _ticks(20, 25))[-1] == 2
    governor.pin(None)
    levels = _feed(governor, 0.0, _ticks(25.25, 40))
    assert levels[0] == 2
    assert levels[-1] < 2
    with pytest.raises(ValueError, match="0 to 3"):
        governor.pin(4)


def test_a_subscribers_layer_is_the_lower_of_tile_size_and_governor_ceiling() -> None:
    """A large tile's top layer is lowered to the ceiling; a small tile's low layer stays."""
    ceilings: dict[str, int | None] = {"a": 0, "b": None}
    leg = SubscribeLeg(
        ParticipantId("viewer"),
        Decoders(),
        new_pc=lambda: pytest.fail("no connection is needed"),
        bind=lambda pc: None,
        send=lambda message: None,
        on_refused=lambda uptrack: None,
        ceiling=lambda uptrack: ceilings[uptrack.owner],
    )
    tracks = {
        owner: Uptrack(ParticipantId(owner), "video", VP8, lambda ssrc: None, rids=("q", "h", "f"))
        for owner in ("a", "b")
    }
    leg.set_view({("a", "camera"): (1280, 720), ("b", "camera"): (1280, 720)})
    assert leg._layer_for(tracks["a"]) == 0
    assert leg._layer_for(tracks["b"]) == 2
    ceilings["a"] = 1
    assert leg._layer_for(tracks["a"]) == 1
    leg.set_view({("a", "camera"): (200, 120)})
    assert leg._layer_for(tracks["a"]) == 0


def test_keyframes_only_forwards_keyframes_asks_for_them_and_resumes_cleanly() -> None:
    """A video forwarded as keyframes only skips delta frames and asks for a keyframe at most
    once per KEYFRAME_INTERVAL; back to every frame, it holds its viewers until the keyframe it
    asks for (a delta frame would refer to frames they never got)."""
    time, asked = FakeTime(), []
    uptrack = Uptrack(
        ParticipantId("p-pub"),
        "video",
        VP8,
        asked.append,
        clock=time.clock,
        schedule=time.schedule,  # type: ignore[arg-type]
    )
    uptrack.on_packet(_packet(1, 0, KEY), VP8)
    writer = FakeWriter()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=500, origin=0))
    Downtrack(uptrack, ParticipantId("p-viewer"), feed)
    feed.ready(writer)
    uptrack.on_packet(_packet(2, 3000, KEY), VP8)
    time.advance(1.0)
    asked.clear()
    uptrack.set_keyframes_only(True)
    assert asked == [SSRC]
    for seq in range(3, 9):
        time.advance(1 / 30)
        uptrack.on_packet(_packet(seq, seq * 3000, DELTA), VP8)
    assert len(writer.frames) == 1  # only the keyframe before the switch
    time.advance(KEYFRAME_INTERVAL)
    assert asked == [SSRC, SSRC]  # one more, not one per delta frame
    uptrack.on_packet(_packet(9, 27000, KEY), VP8)
    assert len(writer.frames) == 2
    uptrack.set_keyframes_only(False)
    uptrack.on_packet(_packet(10, 30000, DELTA), VP8)
    assert len(writer.frames) == 2
    time.advance(KEYFRAME_INTERVAL)
    uptrack.on_packet(_packet(11, 33000, KEY), VP8)
    uptrack.on_packet(_packet(12, 36000, DELTA), VP8)
    assert len(writer.frames) == 4


def _governed_room(level: int) -> tuple[MediaRoom, LoadGovernor]:
    """A room whose governor is held at ``level``, with nobody speaking (every camera is
    unimportant)."""
    governor = LoadGovernor(POLICY)
    governor.pin(level)
    governor.observe(0.0, 0.0)
    room = MediaRoom(
        RoomName("r"),
        MediaConfig(governor=governor),
        send=lambda participant, message: None,
        on_closed=lambda peer: None,
        clock=lambda: 0.0,
    )
    return room, governor


@pytest.mark.parametrize(
    ("level", "frames", "bitrate"),
    [(0, 16, None), (1, 8, 600_000), (2, 8, 300_000), (3, 4, 300_000)],
)
def test_a_single_layer_video_in_temporal_layers_is_thinned_by_frame_rate(
    level: int, frames: int, bitrate: int | None
) -> None:
    """An unimportant single-layer camera whose frames carry TIDs (the replaying participants
    of the overload test, a browser sending L1T3 without simulcast) is told the level's bitrate
    and sent every frame, TID 0-1 (half) or TID 0 (a quarter) of them, never keyframes only:
    no keyframe is asked for and every frame sent follows the one before it."""
    room, _ = _governed_room(level)
    time, asked = FakeTime(), []
    uptrack = Uptrack(ParticipantId("p-pub"), "video", VP8, asked.append, clock=time.clock)
    stream, received = Stream(uptrack), Received()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=100, origin=0))
    Downtrack(uptrack, ParticipantId("p-viewer"), feed)
    feed.ready(received)
    room._govern(uptrack)
    stream.frames(4)  # the first frames tell it the video has temporal layers
    room._govern(uptrack)  # the governor's next look: nothing changes
    count = len(received.frames)
    stream.frames(16)
    assert len(received.frames) - count == frames
    assert uptrack.max_bitrate == bitrate
    assert not uptrack.keyframes_only
    assert asked == []
    received.check_continuous()


def test_a_single_layer_video_without_temporal_layers_is_keyframes_only_at_the_last_level() -> None:
    """Without TIDs the last level still forwards keyframes only, while a video governed
    before its first frame leaves keyframes only once its frames turn out to carry TIDs, and
    is sent its base layer's delta frames."""
    room, _ = _governed_room(3)
    time, asked = FakeTime(), []
    plain = Uptrack(ParticipantId("p-pub"), "video", VP8, asked.append, clock=time.clock)
    plain.on_packet(_packet(1, 0, KEY), VP8)
    room._govern(plain)
    assert plain.keyframes_only
    layered = Uptrack(
        ParticipantId("p-other"),
        "video",
        VP8,
        asked.append,
        clock=time.clock,
        schedule=time.schedule,  # type: ignore[arg-type]
    )
    room._govern(layered)
    assert layered.keyframes_only  # nothing known of its frames yet
    stream, received = Stream(layered), Received()
    feed = SenderFeed("video", StreamRewriter("video", first_sequence=100, origin=0))
    Downtrack(layered, ParticipantId("p-viewer"), feed)
    feed.ready(received)
    stream.frames(8)
    assert not layered.keyframes_only
    assert layered.temporal_layers
    assert received.tids() == [0, 0]  # the keyframe, then TID 0 only


def test_udp_backlog_sums_only_this_processs_sockets() -> None:
    """The receive queue (hexadecimal) and drops of the given inodes are summed; other
    sockets and malformed lines are ignored."""
    table = "\n".join(
        [
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
            "timeout inode ref pointer drops",
            "  1: 0100007F:9C40 00000000:0000 07 00000000:00000400 00:00000000 00000000     0"
            "        0 111 2 0000000000000000 7",
            "  2: 0100007F:9C41 00000000:0000 07 00000000:00000100 00:00000000 00000000     0"
            "        0 222 2 0000000000000000 5",
            "  3: 0100007F:9C42 00000000:0000 07 00000000:00000010 00:00000000 00000000     0"
            "        0 333 2 0000000000000000 100",
            "  4: garbage",
        ]
    )
    assert parse_udp_table(table, {111, 222}) == UdpBacklog(queued=0x500, drops=12)
    assert parse_udp_table(table, set()) == UdpBacklog()


def test_governor_rises_on_dropped_datagrams_even_with_no_lag() -> None:
    """A server whose sockets overflow while its timers run on time is overloaded too; the
    calm needed to step down doubles when the load comes back soon after one."""
    governor = LoadGovernor(POLICY)
    for now in _ticks(0, 1):
        governor.observe(0.0, now, dropped=30)
    assert governor.level == 1
    assert governor.dropped == 30 * 5
    for now in _ticks(1.25, 6.5):
        governor.observe(0.0, now)
    assert governor.level == 0
    for now in _ticks(6.75, 7.75):
        governor.observe(0.0, now, dropped=POLICY.drops - 1)
    assert governor.level == 0  # a few lost in a burst are no overload
    for now in _ticks(8, 9):
        governor.observe(0.0, now, dropped=POLICY.drops)
    assert governor.level == 1
    assert governor.fall_hold == 2 * POLICY.fall


def test_governor_rises_on_a_standing_queue_with_the_lag_pinned_at_its_threshold() -> None:
    """Measured with a capped server a little short of CPU: the lag sat at the threshold
    (above it every other sample at most) and 60-136 KB waited in the sockets for eight
    seconds, nothing dropped; the governor must not wait for the collapse that follows."""
    governor = LoadGovernor(POLICY)
    rate = 750.0  # packets a second read, as measured
    for index, now in enumerate(_ticks(0, 8)):
        queued = 90_000 if index % 5 else 17_000  # now and then the loop catches up a little
        lag = 0.051 if index % 2 else 0.049
        governor.observe(lag, now, queued=queued, waiting=waiting_seconds(queued, rate))
    assert governor.level >= 2
    calm = LoadGovernor(POLICY)  # the same lag with what a server that keeps up leaves queued
    for index, now in enumerate(_ticks(0, 8)):
        lag = 0.051 if index % 2 else 0.049
        calm.observe(lag, now, queued=6_912, waiting=waiting_seconds(6_912, rate))
    assert calm.level == 0
    # A busy uncapped server's queue between two long turns of its loop, on time otherwise.
    busy = LoadGovernor(POLICY)
    for now in _ticks(0, 8):
        busy.observe(0.003, now, queued=1_000_000, waiting=waiting_seconds(1_000_000, 9_000))
    assert busy.level == 0


def test_governor_rises_when_three_quarters_of_a_seconds_samples_are_overloaded() -> None:
    """One calm sample in four does not hold the level down; one in two does."""
    mostly = LoadGovernor(POLICY)
    for index, now in enumerate(_ticks(0, 3)):
        mostly.observe(0.2 if index % 4 else 0.0, now)
    assert mostly.level >= 2
    half = LoadGovernor(POLICY)
    for index, now in enumerate(_ticks(0, 3)):
        half.observe(0.2 if index % 2 else 0.0, now)
    assert half.level == 0


def test_waiting_seconds_counts_queued_datagrams_at_the_read_rate() -> None:
    assert waiting_seconds(0, 750) == 0
    assert waiting_seconds(750 * PACKET_COST, 750) == pytest.approx(1.0)
    # A quiet server's few waiting datagrams are not a backlog.
    assert waiting_seconds(3 * PACKET_COST, 0) < POLICY.backlog
