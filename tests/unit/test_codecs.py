"""The codec a publisher is asked for: one that everyone in its room can decode."""

from __future__ import annotations

import pytest

from veche.media.codecs import Decoders, choose_codec

VP8, H264, OPUS = "video/VP8", "video/H264", "audio/opus"
SAFARI_OFFER = [H264, VP8]
"""A publisher that prefers H.264 (Safari's default order)."""
FIREFOX = Decoders.named(["video/VP8", "video/VP9", "video/AV1", "video/rtx", "audio/opus"])
"""A Firefox that could not download OpenH264 (a closed network)."""
CHROMIUM = Decoders.named([VP8, H264, "video/VP9", OPUS])


def test_vp8_is_preferred_even_when_the_publisher_lists_h264_first() -> None:
    """With the default preference a Safari-like publisher is answered with VP8."""
    assert SAFARI_OFFER[choose_codec(SAFARI_OFFER, [CHROMIUM], ["VP8", "H264"])] == VP8


def test_the_server_preference_is_followed_when_everyone_decodes_it() -> None:
    """A server that prefers H.264 gets H.264 from a publisher offering it, if all decode it."""
    assert SAFARI_OFFER[choose_codec(SAFARI_OFFER, [CHROMIUM], ["H264", "VP8"])] == H264


def test_a_viewer_without_h264_moves_the_choice_to_vp8() -> None:
    """One Firefox without H.264 in the room is enough for VP8, whatever the preference."""
    room = [CHROMIUM, FIREFOX]
    assert SAFARI_OFFER[choose_codec(SAFARI_OFFER, room, ["H264", "VP8"])] == VP8


def test_without_a_common_codec_the_most_served_wins() -> None:
    """An H.264-only publisher keeps H.264; the viewers who cannot play it are the fewest."""
    assert choose_codec([H264], [FIREFOX, CHROMIUM], ["VP8"]) == 0
    assert [VP8, H264][choose_codec([VP8, H264], [FIREFOX, Decoders.named([H264])], [])] == VP8


def test_codecs_not_in_the_preference_follow_the_publishers_order() -> None:
    """Unknown to the preference list, the publisher's own order decides."""
    assert choose_codec(["video/X1", "video/X2"], [Decoders()], ["VP8"]) == 0


def test_an_empty_room_takes_the_preferred_codec() -> None:
    """Alone in a room, the publisher is asked for the server's preferred codec."""
    assert SAFARI_OFFER[choose_codec(SAFARI_OFFER, [], ["VP8", "H264"])] == VP8


def test_nothing_offered_is_an_error() -> None:
    """A section with no codec left is not a choice to make."""
    with pytest.raises(ValueError, match="nothing offered"):
        choose_codec([], [], ["VP8"])


def test_decoders_that_said_nothing_decode_everything() -> None:
    """A client that named no codecs is taken to decode what the server forwards."""
    assert Decoders().can_decode(H264)
    assert Decoders.named(None).can_decode(VP8)


def test_decoders_compare_mime_types_case_insensitively() -> None:
    """Browsers write ``video/VP8``, aiortc ``video/vp8``: both name one codec."""
    decoders = Decoders.named(["VIDEO/vp8", "audio/OPUS", "application/x-nonsense"])
    assert decoders.can_decode("video/VP8")
    assert decoders.can_decode("audio/opus")
    assert not decoders.can_decode("video/H264")
    assert decoders.listed == frozenset({"video/vp8", "audio/opus"})


def test_a_refused_codec_is_no_longer_decodable() -> None:
    """A section declined in an answer takes its codec off what the client decodes."""
    refusing = Decoders().refusing("video/H264")
    assert not refusing.can_decode("video/h264")
    assert refusing.can_decode(VP8)
