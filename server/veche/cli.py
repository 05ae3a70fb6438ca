"""The ``veche`` command: ``veche serve [--flag value ...]``.

Every setting of :class:`veche.settings.Settings` is a flag named after it (``max_participants``
is ``--max-participants``); a flag beats the ``VECHE_*`` environment variable.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from veche import __version__
from veche.settings import Settings

__all__ = ["main", "parse_settings"]

log = logging.getLogger("veche")

ADMIN_ROOM_TRIES: Final = 32
"""Calls ``veche admin`` makes about one room before it says there is no such room: with
``--workers`` N each lands on a worker the kernel picks, and only one hosts the room (with 8
workers, 32 calls miss it once in 70)."""


class SettingsError(Exception):
    """A setting has an invalid value; the message is one line naming it."""


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _env(field: str) -> str:
    return "VECHE_" + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one ``serve`` flag per setting."""
    parser = argparse.ArgumentParser(prog="veche", description="Self-hosted video meetings.")
    parser.add_argument("--version", action="version", version=f"veche {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the server (the default command)")
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        text = f"{field.description} [env {_env(name)}, default {shown}]".replace("%", "%%")
        if field.annotation is bool or field.annotation == (bool | None):
            serve.add_argument(
                _flag(name), dest=name, action="store_const", const="true", default=None, help=text
            )
        else:
            serve.add_argument(_flag(name), dest=name, metavar="VALUE", default=None, help=text)
    # Set by ``--workers`` on its children: several processes listen on one port.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    token = commands.add_parser(
        "token", help="mint a join token (auth=jwt) with the VECHE_JWT_* settings"
    )
    token.add_argument("--room", required=True, help="room name, or * for every room")
    token.add_argument("--name", required=True, help="display name the holder gets")
    token.add_argument("--subject", default=None, help="identity (default: random)")
    token.add_argument("--moderator", action="store_true", help="the holder moderates")
    token.add_argument("--ttl", type=int, default=3600, help="seconds the token is valid")
    token.add_argument("--private-key", default=None, help="PEM private key file (RS256/ES256)")
    admin = commands.add_parser(
        "admin", help="call the admin API of a running server (token: VECHE_ADMIN_TOKEN)"
    )
    admin.add_argument(
        "--url", default=None, help="the server (default: http://127.0.0.1:<VECHE_PORT>)"
    )
    actions = admin.add_subparsers(dest="action", required=True)
    actions.add_parser("rooms", help="list rooms and participants")
    actions.add_parser("room", help="one room").add_argument("room")
    actions.add_parser("close", help="end a meeting for everyone").add_argument("room")
    remove = actions.add_parser("remove", help="remove a participant")
    remove.add_argument("room")
    remove.add_argument("participant")
    record = actions.add_parser("record", help="start recording a room")
    record.add_argument("room")
    record.add_argument("--audio-only", action="store_true", help="leave video out")
    actions.add_parser("stop-recording", help="stop recording a room").add_argument("room")
    actions.add_parser("recordings", help="list recordings and their manifests")
    governor = actions.add_parser(
        "governor", help="show the load governor, or hold it at a level (auto: the load decides)"
    )
    governor.add_argument("level", nargs="?", choices=["0", "1", "2", "3", "auto"])
    return parser


def parse_settings(values: dict[str, str | None]) -> Settings:
    """Settings from the environment overridden by ``values`` (flags not given are ``None``).

    Raises :class:`SettingsError` with one line per invalid setting.
    """
    given = {key: value for key, value in values.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            field = str(err["loc"][0]) if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ")
            if field:
                lines.append(f"invalid setting {field} ({_env(field)} / {_flag(field)}): {message}")
            else:
                lines.append(f"invalid settings: {message}")
        raise SettingsError("\n".join(lines)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``veche`` console script and ``python -m veche``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("--") and args[0] not in ("--help", "--version")):
        args.insert(0, "serve")
    parsed = build_parser().parse_args(args)
    values = {name: getattr(parsed, name, None) for name in Settings.model_fields}
    try:
        settings = parse_settings(values)
    except SettingsError as exc:
        print(f"veche: {exc}", file=sys.stderr)
        return 2
    if parsed.command == "token":
        return mint(settings, parsed)
    if parsed.command == "admin":
        return admin(settings, parsed)
    if settings.workers > 1:
        from veche.logs import configure_logging
        from veche.workers import run_workers

        configure_logging(settings.log_level, settings.log_format)
        if settings.room_state == "sqlite":
            print(
                "veche: several workers keep rooms' state in redis (room_state=auto or redis)",
                file=sys.stderr,
            )
            return 2
        data = Path(settings.data_dir) / "redis" if settings.room_state != "off" else None
        return run_workers(settings.workers, _without_workers(args[1:]), settings.redis_url, data)
    return serve(settings, reuse_port=parsed.reuse_port)


def _without_workers(args: list[str]) -> list[str]:
    """``serve`` flags as given, less ``--workers``."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def mint(settings: Settings, parsed: argparse.Namespace) -> int:
    """``veche token``: print a join token."""
    import secrets
    from pathlib import Path

    from veche.auth import AuthError, mint_token

    try:
        private_key = (
            Path(parsed.private_key).read_text(encoding="utf-8") if parsed.private_key else None
        )
        token = mint_token(
            settings,
            room=parsed.room,
            name=parsed.name,
            subject=parsed.subject or secrets.token_urlsafe(9),
            moderator=parsed.moderator,
            ttl=parsed.ttl,
            private_key=private_key,
        )
    except (AuthError, OSError, ValueError) as exc:
        print(f"veche: cannot mint a token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def admin(settings: Settings, parsed: argparse.Namespace) -> int:
    """``veche admin``: one call of the admin API; prints its JSON answer."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import quote

    if settings.admin_token is None:
        print("veche: set VECHE_ADMIN_TOKEN (the server's admin_token)", file=sys.stderr)
        return 2
    base = (parsed.url or f"http://127.0.0.1:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        print("veche: --url must start with http:// or https://", file=sys.stderr)
        return 2
    room = f"/api/rooms/{quote(getattr(parsed, 'room', ''), safe='')}"
    method, path, body = {
        "rooms": ("GET", "/api/rooms", None),
        "room": ("GET", room, None),
        "close": ("DELETE", room, None),
        "remove": (
            "DELETE",
            f"{room}/participants/{quote(getattr(parsed, 'participant', ''), safe='')}",
            None,
        ),
        "record": (
            "POST",
            f"{room}/recording",
            json.dumps({"audio_only": bool(getattr(parsed, "audio_only", False))}).encode(),
        ),
        "stop-recording": ("DELETE", f"{room}/recording", None),
        "recordings": ("GET", "/api/recordings", None),
        "governor": _governor_call(getattr(parsed, "level", None)),
    }[parsed.action]
    request = urllib.request.Request(base + path, data=body, method=method)  # noqa: S310
    if body is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {settings.admin_token.get_secret_value()}")
    # With ``--workers`` each call reaches the worker the kernel picks for its connection, and
    # only the room's own worker knows it: a room's call that finds no room asks again, on a
    # new connection each time (a single process answers the same every time; it costs
    # milliseconds).
    tries = ADMIN_ROOM_TRIES if path.startswith(room) else 1
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                body = response.read()
            break
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace").strip()
            if exc.code == 404 and text == "no such room" and attempt + 1 < tries:
                continue
            print(f"veche: {exc.code} {text}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"veche: cannot reach {base}: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(json.loads(body), indent=2, ensure_ascii=False) if body else "done")
    return 0


def _governor_call(level: str | None) -> tuple[str, str, bytes | None]:
    """``veche admin governor [LEVEL]``: show it, or pin it (``auto``: unpin)."""
    import json

    if level is None:
        return "GET", "/api/governor", None
    return (
        "PUT",
        "/api/governor",
        json.dumps({"level": None if level == "auto" else int(level)}).encode(),
    )


def _raise_open_files_limit() -> None:
    """Every participant holds a WebSocket and UDP sockets: allow as many descriptors as the
    system lets this process have (the usual soft limit of 1024 caps a server at a few hundred
    participants)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def serve(settings: Settings, *, reuse_port: bool = False) -> int:
    """Run the server until SIGINT or SIGTERM; return the exit status."""
    from aiohttp import web

    from veche.app import create_app
    from veche.logs import configure_logging
    from veche.tls import server_ssl_context

    configure_logging(settings.log_level, settings.log_format)
    _raise_open_files_limit()
    try:
        ssl_context = server_ssl_context(settings)
    except (OSError, ValueError) as exc:
        print(f"veche: cannot set up TLS: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise walk it all (a pause that grows with the heap).
    gc.freeze()
    scheme = "https" if ssl_context else "http"
    url = f"{scheme}://{settings.host}:{settings.port}"
    log.info("veche %s listening on %s", __version__, url, extra={"url": url})
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        ssl_context=ssl_context,
        print=None,
        access_log=None,
        shutdown_timeout=10.0,
        reuse_port=reuse_port,
    )
    log.info("veche stopped")
    return 0
