"""Links that carry their own permission."""

from __future__ import annotations

import stat
from pathlib import Path

from veche.links import LinkSigner, node_key


def test_a_link_allows_its_path_until_it_expires() -> None:
    signer = LinkSigner(b"k" * 32)
    link = signer.link("/recordings/r 1/a.webm", now=1000, ttl=60)
    path, query = link.split("?")
    assert path == "/recordings/r%201/a.webm"
    fields = dict(pair.split("=") for pair in query.split("&"))
    assert fields["expires"] == "1060"
    assert signer.allows("/recordings/r 1/a.webm", "1060", fields["sig"], now=1059)
    assert not signer.allows("/recordings/r 1/a.webm", "1060", fields["sig"], now=1060)
    assert not signer.allows("/recordings/r 1/b.webm", "1060", fields["sig"], now=1000)
    assert not signer.allows("/recordings/r 1/a.webm", "9999", fields["sig"], now=1000)
    assert not signer.allows("/recordings/r 1/a.webm", "x", fields["sig"], now=1000)
    assert not LinkSigner(b"o" * 32).allows("/recordings/r 1/a.webm", "1060", fields["sig"], now=0)


def test_the_node_key_is_kept_private_and_reused(tmp_path: Path) -> None:
    first = node_key(tmp_path / "data")
    assert node_key(tmp_path / "data") == first
    assert stat.S_IMODE((tmp_path / "data" / "link.key").stat().st_mode) == 0o600
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert len(node_key(blocked)) == 32  # a key of this process only
