"""Where the browser client's files are.

An installed wheel carries them as ``veche/web`` (hatch ``force-include``); a checkout (editable
install) has them in ``web/`` at the repository root.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["web_root"]

_PACKAGE = Path(__file__).resolve().parent


def web_root() -> Path:
    """The directory holding ``index.html``, ``room.html`` and the scripts."""
    for candidate in (_PACKAGE / "web", _PACKAGE.parent.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("the browser client files (web/) are missing from this installation")
