"""Token identities: which rooms a token's ``room`` claim admits to."""

from __future__ import annotations

import pytest

from veche.auth import Identity
from veche.rooms.names import normalize_room_name


def _identity(room: str) -> Identity:
    return Identity(subject="user-1", room=room, name="Ada", moderator=False)


@pytest.mark.parametrize("claim", ["Board", "BOARD", "board", "\uff22\uff2f\uff21\uff32\uff24"])
@pytest.mark.parametrize("requested", ["board", "Board", "\uff42oard"])
def test_identity_allows_a_room_claim_in_any_case(claim: str, requested: str) -> None:
    """A ``room`` claim is normalised as room names are, so capitals or full width still admit."""
    assert _identity(claim).allows(normalize_room_name(requested))


def test_identity_allows_no_other_room() -> None:
    """A folded claim still names one room only."""
    assert not _identity("Board").allows(normalize_room_name("boards"))


def test_identity_allows_every_room_with_a_star() -> None:
    """``*`` admits to every room."""
    assert _identity("*").allows(normalize_room_name("Anything"))
