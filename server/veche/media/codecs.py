"""Which codec a publisher sends, so that everyone in its room can play it.

An SFU forwards what it receives and never transcodes, so each published track reaches every
viewer in the one codec its publisher encodes. Each client says in ``hello`` which codecs it can
decode (``receive_codecs``); a client that says nothing is taken to decode whatever the server
forwards. A publish offer lists the codecs the publisher can send, in its own order of
preference (Safari puts H.264 first, Chromium and Firefox VP8). The server answers with one of
them, chosen by :func:`choose_codec`:

1. the codecs every other participant of the room can decode, in the server's order of
   preference (``video_codecs``, VP8 first by default: every WebRTC browser decodes VP8, while
   H.264 is missing from a Firefox that could not download its OpenH264 plugin — the normal
   state on a closed network);
2. if no offered codec suits everyone, the one the most participants can decode; those who
   cannot are told (``track_unavailable``) and still receive everything else.

Nothing here imports aiortc: codecs are named by MIME subtype (``VP8``, ``H264``, ``opus``), case
folded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["AUDIO_PREFERENCE", "Decoders", "choose_codec"]

AUDIO_PREFERENCE: Final = ("opus",)
"""Audio: Opus whenever offered (every WebRTC browser sends and plays it)."""


@dataclass(frozen=True, slots=True)
class Decoders:
    """What one participant can decode.

    ``listed``: the lower-case MIME types its client named in ``hello`` (``video/vp8``), or
    ``None`` if it named none (then anything the server forwards is taken to play);
    ``refused``: MIME types its client turned down since (a declined section in an answer).
    """

    listed: frozenset[str] | None = None
    refused: frozenset[str] = frozenset()

    @classmethod
    def named(cls, mime_types: Iterable[str] | None) -> Decoders:
        """From ``hello.receive_codecs`` (entries that are not ``audio/…`` or ``video/…`` are
        dropped)."""
        if mime_types is None:
            return cls()
        return cls(
            frozenset(m.lower() for m in mime_types if m.lower().startswith(("audio/", "video/")))
        )

    def can_decode(self, mime_type: str) -> bool:
        """Whether ``mime_type`` (``video/H264``) plays here."""
        mime = mime_type.lower()
        return mime not in self.refused and (self.listed is None or mime in self.listed)

    def refusing(self, mime_type: str) -> Decoders:
        """These decoders, less ``mime_type``."""
        return Decoders(self.listed, self.refused | {mime_type.lower()})


def choose_codec(
    offered: Sequence[str],
    audience: Iterable[Decoders],
    preference: Sequence[str],
) -> int:
    """The index in ``offered`` (MIME types in the publisher's order, no RTX) of the codec to
    send to ``audience`` (everyone else in the room).

    Codecs everyone can decode come first, ordered by ``preference`` (subtypes such as
    ``"VP8"``; a codec not named there ranks after those that are, in the publisher's order);
    if none suits everyone, the one the most can decode, ties broken the same way.
    """
    if not offered:
        raise ValueError("nothing offered to choose from")
    viewers = list(audience)
    ranks = [subtype.lower() for subtype in preference]

    def rank(index: int) -> tuple[int, int, int]:
        mime = offered[index]
        subtype = mime.split("/", 1)[-1].lower()
        blind = sum(not viewer.can_decode(mime) for viewer in viewers)
        preferred = ranks.index(subtype) if subtype in ranks else len(ranks)
        return (blind, preferred, index)

    return min(range(len(offered)), key=rank)
