"""A room's chat: the last messages kept for late joiners."""

from __future__ import annotations

import unicodedata
from collections import deque
from typing import Final

from veche.errors import ErrorCode, Refused
from veche.protocol import MAX_CHAT_LENGTH, ChatAudience, ChatEntry

__all__ = ["MAX_CHAT_LENGTH", "ChatLog"]

HISTORY: Final = 200
"""Messages a late joiner receives."""

_BIDI_CLASSES: Final = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})
_BIDI_MARKS: Final = frozenset("\u200e\u200f\u061c")


def _kept(char: str) -> bool:
    # Bidi embeddings, overrides, isolates and marks let a message show text other than it holds
    # ("\u202efdp.exe" is shown as "exe.pdf"); the zero-width joiners of emoji are kept.
    if char in "\n\t":
        return True
    if unicodedata.category(char) == "Cc" or char in _BIDI_MARKS:
        return False
    return unicodedata.bidirectional(char) not in _BIDI_CLASSES


class ChatLog:
    """The room's recent chat messages, oldest first."""

    def __init__(self, entries: list[ChatEntry] | None = None) -> None:
        """A log holding ``entries`` (kept from before a restart) at first."""
        self._entries: deque[ChatEntry] = deque(entries or (), maxlen=HISTORY)
        self._next_id = max((entry.id for entry in self._entries), default=0) + 1

    @property
    def entries(self) -> list[ChatEntry]:
        """The kept messages, oldest first."""
        return list(self._entries)

    def post(
        self,
        participant_id: str,
        name: str,
        text: str,
        *,
        now: float,
        to: ChatAudience = "everyone",
    ) -> ChatEntry:
        """Record a message. Control characters other than line breaks and tabs, and the
        bidirectional controls and marks, are dropped;
        raises :class:`~veche.errors.Refused` (``too_long``, ``bad_message``) for text that is
        too long or empty."""
        cleaned = "".join(char for char in text if _kept(char)).strip()
        if len(cleaned) > MAX_CHAT_LENGTH:
            raise Refused(
                f"a chat message may have at most {MAX_CHAT_LENGTH} characters",
                code=ErrorCode.TOO_LONG,
            )
        if not cleaned:
            raise Refused("the chat message is empty", code=ErrorCode.BAD_MESSAGE)
        entry = ChatEntry(
            id=self._next_id,
            participant_id=participant_id,
            name=name,
            text=cleaned,
            at=now,
            to=to,
        )
        self._next_id += 1
        self._entries.append(entry)
        return entry
