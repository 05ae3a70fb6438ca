"""``python spyserver.py serve ...``: the real Veche server, counting every codec aiortc creates.

At exit it writes ``{"decoders": n, "encoders": n}`` to the file named by ``VECHE_SPY_FILE``, so
a test can assert that forwarding created none.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from typing import Any

import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

counts = {"decoders": 0, "encoders": 0}


def _count(module: Any, name: str, key: str) -> None:
    original = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return original(*args, **kwargs)

    setattr(module, name, counted)


_count(aiortc.rtcrtpreceiver, "get_decoder", "decoders")
_count(aiortc.rtcrtpsender, "get_encoder", "encoders")


@atexit.register
def _report() -> None:
    with open(os.environ["VECHE_SPY_FILE"], "w", encoding="utf-8") as out:
        json.dump(counts, out)


if __name__ == "__main__":
    from veche.cli import main

    sys.exit(main())
