"""Logging set-up: human text or one JSON object per line, with structured extras."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Final

__all__ = ["CONNECTION", "PARTICIPANT", "ContextFilter", "configure_logging"]

CONNECTION: Final[ContextVar[str | None]] = ContextVar("veche_connection", default=None)
"""The signalling connection the current task serves (set by the WebSocket edge)."""
PARTICIPANT: Final[ContextVar[str | None]] = ContextVar("veche_participant", default=None)
"""The participant the current task acts for, once known (set by the hub)."""


class ContextFilter(logging.Filter):
    """Stamps every record with the connection and participant the current task serves, so
    every line of one client's story can be found (``connection=c-...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in (("connection", CONNECTION), ("participant", PARTICIPANT)):
            value = var.get()
            if value is not None and not hasattr(record, name):
                setattr(record, name, value)
        return True


_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return f"{line} {extras}" if extras else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and the extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record at ``level`` or above to standard error in format ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aioice reports every ICE check at INFO: useful only when debugging connectivity.
    logging.getLogger("aioice").setLevel(
        logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    )
