"""The generated message reference lists every message, field and enumeration of the protocol."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import Field, create_model

from veche import protocol, reference
from veche.errors import ErrorCode
from veche.protocol import CLIENT_TYPES, SERVER_TYPES, GoodbyeReason, LeaveReason, ParticipantInfo

PAGE = reference.render()


def _section(heading: str) -> str:
    """The text under ``### heading`` up to the next heading."""
    return PAGE.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]


@pytest.mark.parametrize("kind", sorted({*CLIENT_TYPES, *SERVER_TYPES}))
def test_reference_has_a_section_per_message(kind: str) -> None:
    """Each message type has its own heading and a row in the index."""
    assert f"\n### `{kind}`\n" in PAGE
    assert f"| [`{kind}`](#{kind}) |" in PAGE


def test_reference_lists_every_participant_field() -> None:
    """The participant entry has a row for each of ParticipantInfo's fields."""
    section = _section("`ParticipantInfo`")
    for name in ParticipantInfo.model_fields:
        assert f"| `{name}` |" in section, name


@pytest.mark.parametrize(
    ("heading", "values"),
    [
        ("`ErrorCode`", [code.value for code in ErrorCode]),
        ("`LeaveReason`", list(typing.get_args(LeaveReason))),
        ("`GoodbyeReason`", list(typing.get_args(GoodbyeReason))),
    ],
)
def test_reference_lists_every_enumeration_value(heading: str, values: list[str]) -> None:
    """Error codes, leave reasons and goodbye reasons each have a row per value."""
    section = _section(heading)
    for value in values:
        assert f'| `"{value}"` |' in section, value


def test_reference_links_resolve_to_headings() -> None:
    """Every link inside the page points at one of its headings (GitHub's anchors)."""
    headings = re.findall(r"^#+ (.+)$", PAGE, flags=re.MULTILINE)
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    for target in re.findall(r"\]\(#([^)]+)\)", PAGE):
        assert target in anchors, target


def test_reference_walks_models_it_was_not_told_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model added to the protocol module appears without any list being updated."""
    extra = create_model(
        "Envelope",
        __module__=protocol.__name__,
        __doc__="Between nodes.",
        hop=(int, Field(description="How far it went.")),
    )
    monkeypatch.setattr(protocol, "Envelope", extra, raising=False)
    page = reference.render()
    assert "### `Envelope`\n\nBetween nodes." in page
    assert "| `hop` | integer | yes | How far it went. |" in page
