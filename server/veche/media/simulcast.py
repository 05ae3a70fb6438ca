"""Simulcast: a publisher sends one video in several layers (the same picture at several sizes,
each its own RTP stream) and each viewer is forwarded the one layer that suits the size it shows
the video at.

The publish offer announces layers by RTP stream id (RFC 8851 ``a=rid``, RFC 8853
``a=simulcast``); :func:`offered_layers` reads them and :func:`answer_layers` accepts them in the
answer (aiortc knows neither attribute). Layers are listed from the lowest up, as the browser
client sends them (``q``, ``h``, ``f``). :func:`layer_for_width` picks a viewer's layer. Pure
functions on SDP text and numbers: nothing here imports aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["LAYER_WIDTHS", "OfferedLayers", "answer_layers", "layer_for_width", "offered_layers"]

RTP_STREAM_ID: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RTP_STREAM_ID: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"

LAYER_WIDTHS: Final = (360, 720)
"""A tile shown at most this many CSS pixels wide gets the lowest layer, then the next; wider
gets the highest."""

DEFAULT_LAYER: Final = 1
"""The layer a viewer gets while it has said nothing about the size (the middle one of three)."""


@dataclass(frozen=True, slots=True)
class OfferedLayers:
    """One publish section's simulcast layers: ``rids`` from the lowest up, and the ids of the
    stream id header extensions (by URI) the offer uses."""

    rids: tuple[str, ...]
    extensions: dict[str, int]


def offered_layers(sdp: str) -> dict[str, OfferedLayers]:
    """The sections of a publish offer that send simulcast, by MID: those with an
    ``a=simulcast:send`` of two layers or more and the RTP stream id extension (without it the
    layers cannot be told apart)."""
    found: dict[str, OfferedLayers] = {}
    for section in _sections(sdp):
        mid: str | None = None
        sent: list[str] = []
        extensions: dict[str, int] = {}
        for line in section:
            if line.startswith("a=mid:"):
                mid = line[len("a=mid:") :].strip()
            elif line.startswith("a=simulcast:"):
                sent = _simulcast_send(line[len("a=simulcast:") :])
            elif line.startswith("a=extmap:"):
                ext_id, _, rest = line[len("a=extmap:") :].partition(" ")
                uri = rest.split(" ", 1)[0]
                if uri in (RTP_STREAM_ID, REPAIRED_RTP_STREAM_ID):
                    try:
                        extensions[uri] = int(ext_id.split("/", 1)[0])
                    except ValueError:
                        continue
        if mid is not None and len(sent) > 1 and RTP_STREAM_ID in extensions:
            found[mid] = OfferedLayers(tuple(sent), extensions)
    return found


def _simulcast_send(value: str) -> list[str]:
    """The rids of ``send <rid>;<rid>…`` (the first of each set of alternatives, paused ones
    ``~rid`` included: the sender resumes them on its own)."""
    words = value.split()
    for direction, streams in zip(words[::2], words[1::2], strict=False):
        if direction == "send":
            return [alt.split(",")[0].lstrip("~") for alt in streams.split(";") if alt]
    return []


def answer_layers(sdp: str, layers: dict[str, OfferedLayers]) -> str:
    """The answer ``sdp`` accepting each section's layers (``a=rid:<id> recv`` and
    ``a=simulcast:recv``); a section that is not active (refused) is left as it is."""
    if not layers:
        return sdp
    out: list[str] = []
    for section in _sections(sdp, keep_head=True):
        mid = next((line[len("a=mid:") :] for line in section if line.startswith("a=mid:")), None)
        offered = layers.get(mid or "")
        out.extend(section)
        if offered is not None and section[0].startswith("m=") and "a=inactive" not in section:
            out.extend(f"a=rid:{rid} recv" for rid in offered.rids)
            out.append(f"a=simulcast:recv {';'.join(offered.rids)}")
    return "\r\n".join(out) + "\r\n"


def _sections(sdp: str, *, keep_head: bool = False) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if not line:
            continue
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections if keep_head else sections[1:]


def layer_for_width(width: int | None, count: int) -> int:
    """The layer (0 the lowest, of ``count``) for a video shown ``width`` CSS pixels wide, or
    not said (``None``: :data:`DEFAULT_LAYER`)."""
    if count <= 1:
        return 0
    if width is None:
        wanted = DEFAULT_LAYER
    else:
        wanted = next((i for i, limit in enumerate(LAYER_WIDTHS) if width <= limit), 2)
    return min(wanted, count - 1)
