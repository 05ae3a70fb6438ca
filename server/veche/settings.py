"""Every knob of a Veche server, typed and documented in one place.

Values come from, in rising priority: the defaults below, ``VECHE_*`` environment variables, and the
command-line flags of ``veche serve`` (``--port 9000`` for ``port``). List settings take a
comma-separated string in the environment (``VECHE_ALLOWED_ORIGINS=https://a.example,https://b.example``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")
_HOST_RULE = re.compile(r"[A-Za-z0-9_.:/-]{1,64}\s*=\s*\S.{0,255}")


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Server configuration. docs/configuration.md has a row for each field (a test checks it)."""

    model_config = SettingsConfigDict(env_prefix="VECHE_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the HTTP server.")
    public_url: str | None = Field(
        None,
        description="Public base URL users open (e.g. `https://meet.example.org`); "
        "also an allowed WebSocket origin.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra origins allowed to open the WebSocket, comma-separated; "
        "the server's own origin is always allowed.",
    )
    ice_servers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="STUN/TURN URLs handed to clients and used by the server, comma-separated. "
        "Empty: no STUN server is ever contacted.",
    )
    media_port_min: int = Field(
        40000, ge=1024, le=65535, description="Lowest UDP port used for media."
    )
    media_port_max: int = Field(
        40199, ge=1024, le=65535, description="Highest UDP port used for media."
    )
    public_ip: str | None = Field(
        None, description="IP address announced in media candidates (behind NAT or Docker)."
    )
    pipes: bool | None = Field(
        None,
        description="Whether a room's media may span processes: each participant's media runs on "
        "a process of the host its WebSocket reached, and the tracks of a room are piped (once per "
        "process) to the other processes that have its members. Default: on whenever this "
        "process is one of several (`workers` above 1, or nodes sharing a `redis_url`); "
        "`false` keeps each room's media on its owner's process.",
    )
    pipe_host: str | None = Field(
        None,
        description="Address on the internal network where this process receives pipes from "
        "the others (reachable by every node). Default: the address this process reaches "
        "Redis from (loopback for workers of one machine, the container's own address in "
        "compose).",
    )
    pipe_port_min: int = Field(
        40200, ge=1024, le=65535, description="Lowest UDP port a process receives pipes on."
    )
    pipe_port_max: int = Field(
        40299, ge=1024, le=65535, description="Highest UDP port a process receives pipes on."
    )
    host_id: str | None = Field(
        None,
        description="Names the machine this process runs on: with `pipes`, a room's owner may "
        "place a participant's media on any process of the same host as the one its WebSocket "
        "reached (`workers` set one for their children). Unset: a host of its own.",
    )
    placement_threshold: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="With `pipes`: the load (share of its CPU) below which a process already "
        "carrying a room's media takes that room's next participants; above it the room grows "
        "onto the least-loaded process of the host.",
    )
    max_participants: int = Field(
        50, ge=1, le=10000, description="Maximum participants in one room."
    )
    max_waiting: int = Field(
        50,
        ge=0,
        le=10000,
        description="Maximum people waiting in one room's lobby (they do not count toward "
        "`max_participants` until let in).",
    )
    empty_room_grace: float = Field(
        60.0, ge=0, le=86400, description="Seconds an empty room is kept before it is dropped."
    )
    resume_grace: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="Seconds a participant whose connection dropped stays in the room as "
        "'reconnecting' and may resume as itself; 0 removes it at once.",
    )
    data_dir: str = Field(
        "data",
        description="Directory for what outlives a restart (rooms' settings, moderators and "
        "chat in `rooms.sqlite3`; created readable by this user only). Relative paths are "
        "from the working directory.",
    )
    room_state: Literal["auto", "sqlite", "redis", "off"] = Field(
        "auto",
        description="Where rooms' lasting state is kept: `sqlite` (a file in `data_dir`), "
        "`redis` (the `redis_url` nodes share), `off` (nothing survives a restart); `auto`: "
        "`redis` with a `redis_url`, else `sqlite`.",
    )
    room_state_chat: bool = Field(
        True,
        description="Whether rooms' chat (the last 200 messages) is kept across restarts too "
        "(on disk or in Redis) until the room is dropped.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level written."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log line format: human `text` or one JSON object per line."
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for several nodes sharing the load (`redis://host:6379/0`); "
        "unset: one process with in-memory state.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes on this machine (one per core), sharing the port and "
        "coordinating over `redis_url` or an embedded redis-server.",
    )
    ws_heartbeat: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds between WebSocket keepalive pings; a client that misses the pong "
        "is dropped within 1.5x this.",
    )
    ws_outbox_size: int = Field(
        256,
        ge=1,
        le=100000,
        description="Messages queued for one client before it counts as not reading and is closed.",
    )
    ws_send_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds one WebSocket write may block before the client "
        "is closed as not reading.",
    )
    turn_secret: SecretStr | None = Field(
        None,
        description="Shared secret with coturn (`static-auth-secret`): each participant gets "
        "time-limited TURN credentials for the `turn:`/`turns:` URLs of `ice_servers`. Never "
        "sent to browsers or logged.",
    )
    turn_ttl: int = Field(
        600,
        ge=10,
        le=86400,
        description="Seconds a participant's TURN credentials last; a participant still present "
        "gets fresh ones at half this, so credentials end within this after it leaves.",
    )
    ice_transport_policy: Literal["all", "relay"] = Field(
        "all",
        description="`relay` makes every peer connection, the server's and the browsers', use "
        "only TURN relays (needs `turn_secret` and a `turn:` URL).",
    )
    max_candidates: int = Field(
        20,
        ge=1,
        le=200,
        description="Distinct remote ICE candidates accepted per peer connection over its "
        "lifetime (in every offer or answer and trickled).",
    )
    max_tracks: int = Field(
        3,
        ge=1,
        le=16,
        description="Tracks one participant may publish (a microphone, a camera and a screen); "
        "further sections of its publish offers are answered inactive.",
    )
    max_pending_media_per_address: int = Field(
        16,
        ge=1,
        le=1000,
        description="Publish connections one client address may hold before they connect; a "
        "further publish offer is refused with `rate_limited` and binds no port.",
    )
    max_audio_streams: int = Field(
        8,
        ge=0,
        le=1000,
        description="Microphones forwarded in one room: when more participants publish one, "
        "only the loudest of late are forwarded (one who pauses keeps its place for 2 s "
        "unless others speak; a silent one is not forwarded); 0 forwards every microphone.",
    )
    governor_lag: float = Field(
        0.05,
        ge=0,
        le=5,
        description="Seconds the event loop may run late before the server counts as "
        "overloaded and lowers the quality of the least important videos (never audio, the "
        "active speaker or a shared screen), step by step, raising it again once the lag "
        "stays below half of this for 5 s; 0 never degrades.",
    )
    max_sdp_length: int = Field(
        30000,
        ge=2000,
        le=60000,
        description="Characters accepted in a publish offer; a subscribe answer, which has a "
        "section per track forwarded, may have 2,000 more for each track a full room's other "
        "members may publish (`max_tracks` x (`max_participants` - 1)).",
    )
    video_codecs: Annotated[list[Literal["VP8", "H264"]], NoDecode] = Field(
        default_factory=lambda: ["VP8", "H264"],  # type: ignore[arg-type]
        min_length=1,
        description="Video codecs a publisher is asked for when everyone in the room can decode "
        "them, most preferred first, comma-separated (`VP8,H264`).",
    )
    allow_local_candidates: bool = Field(
        False,
        description="Accept remote ICE candidates on loopback and link-local addresses "
        "(only for tests that run every peer on one host).",
    )
    media_connect_timeout: float = Field(
        20.0,
        gt=0,
        le=120,
        description="Seconds a peer connection may take to connect before the client is told "
        "`media_failed` for it and that connection is started afresh.",
    )
    hello_timeout: float = Field(
        10.0, gt=0, le=300, description="Seconds a new connection has to say `hello`."
    )
    ws_rate: float = Field(
        20.0,
        gt=0,
        le=10000,
        description="Messages per second one connection may send on "
        "average; beyond its burst it gets `rate_limited`, and is closed with 1008 if it goes on.",
    )
    ws_burst: int = Field(
        100, ge=1, le=100000, description="Messages one connection may send at once."
    )
    max_connections_per_address: int = Field(
        20, ge=1, le=100000, description="Simultaneous WebSockets from one client address."
    )
    auth: Literal["none", "jwt"] = Field(
        "none",
        description="`jwt`: joining needs a token (`/ws?room=…&token=…`, see `veche token`); "
        "refused tokens get HTTP 401 before the WebSocket opens.",
    )
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = Field(
        "HS256", description="The only JWT algorithm accepted (pinned)."
    )
    jwt_secret: SecretStr | None = Field(
        None, description="HS256 shared secret (32+ characters). Never logged."
    )
    jwt_public_key_file: str | None = Field(
        None, description="PEM public key file for RS256/ES256 tokens."
    )
    jwt_audience: str = Field("veche", description="Required `aud` claim of tokens.")
    oidc_issuer: str | None = Field(
        None,
        description="OpenID Connect provider's issuer URL (its discovery document is at "
        "`<issuer>/.well-known/openid-configuration`); set: people may sign in with it.",
    )
    oidc_client_id: str | None = Field(None, description="Veche's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="Veche's client secret at the provider. Never logged."
    )
    oidc_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["openid", "profile", "email"],
        description="Scopes asked for, comma-separated (`openid` is always asked for); add "
        "the one that puts the host claim (e.g. `groups`) in the ID token if the provider "
        "needs it.",
    )
    oidc_hosts: str = Field(
        "any",
        description="Who may start and host a meeting: `any` signed-in person, or "
        "`<claim>=<value>` for those whose ID token's claim equals the value or, for a list "
        "claim, contains it (`groups=staff`). With sign-in on, nobody else ever becomes "
        "moderator automatically.",
    )
    oidc_guests: Literal["allow", "lobby", "host-first", "deny"] = Field(
        "allow",
        description="What people who may not host get: `allow` (join as usual, never "
        "moderator), `lobby` (wait until a host admits them), `host-first` (wait until a "
        "host is present, then enter by themselves), `deny` (those not signed in are turned "
        "away; signed-in people join).",
    )
    oidc_name_editable: bool = Field(
        True,
        description="Whether a signed-in person may change the display name the provider "
        "gave (`name`, else `preferred_username`, else `email`).",
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Key (32+ characters) that signs sign-in cookies; the same on every node "
        "of a cluster, so a session is valid on each. Required with `oidc_issuer`. Never "
        "logged.",
    )
    session_ttl: int = Field(
        12 * 3600,
        ge=60,
        le=30 * 86400,
        description="Seconds a sign-in lasts (its cookie expires then, and the provider is "
        "asked again).",
    )
    trust_forwarded: bool = Field(
        False,
        description="Behind one reverse proxy: take the client's address (for per-address "
        "limits) from the last X-Forwarded-For entry the proxy adds, and whether the page went "
        "out over HTTPS (a Secure session cookie) from the last X-Forwarded-Proto entry.",
    )
    tls_cert: str | None = Field(
        None, description="PEM certificate (chain) file: serve HTTPS and WSS without a proxy."
    )
    tls_key: str | None = Field(None, description="PEM private key file for `tls_cert`.")
    recording_dir: str | None = Field(
        None,
        description="Directory recordings are written to (one folder per recording); unset: "
        "recording is off.",
    )
    recording_anonymous: bool = Field(
        False,
        description="Whether a moderator who is not signed in (no join token) may record; the "
        "admin API always may.",
    )
    recording_max_seconds: float = Field(
        4 * 3600,
        gt=0,
        le=7 * 24 * 3600,
        description="Seconds a recording may run; then it is stopped, its files are written, and "
        "the moderators are told.",
    )
    recording_max_bytes: int = Field(
        4 * 1024**3,
        ge=1000,
        description="Bytes of media a recording may hold; then it is stopped, its files are "
        "written, and the moderators are told.",
    )
    recording_max_concurrent: int = Field(
        2, ge=1, le=1000, description="Recordings this server runs at once; one more is refused."
    )
    metrics_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Comma-separated networks that may read `/metrics` without a token "
        "(empty: none).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that also grants `/metrics` (a Prometheus `authorization` "
        "credential).",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the admin API under `/api/` (at least 32 characters); "
        "unset: the API is off.",
    )
    self_signed: bool = Field(
        False,
        description="Serve HTTPS with a certificate generated at start for `host` and "
        "`public_url` (a LAN meeting without a proxy; browsers will ask to trust it).",
    )

    @field_validator(
        "allowed_origins",
        "ice_servers",
        "metrics_networks",
        "video_codecs",
        "oidc_scopes",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return [_origin_of(item, "an origin like https://meet.example.org") for item in value]

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(item, strict=False)) for item in value]
        except ValueError as exc:
            raise ValueError(f"not a network: {exc}") from None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _origin_of(value, "a URL like https://meet.example.org")
        return value.rstrip("/")

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
            raise ValueError(f"{value!r} is not an issuer URL like https://id.example.org/realm")
        return value.rstrip("/")

    @field_validator("oidc_hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        if value != "any" and not _HOST_RULE.fullmatch(value):
            raise ValueError(f"{value!r} is neither `any` nor `<claim>=<value>` (groups=staff)")
        return value

    @field_validator("ice_servers")
    @classmethod
    def _ice(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(_ICE_SCHEMES) or len(url) <= len("turn:"):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return value

    @field_validator("pipes", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return None if value == "" else value  # VECHE_PIPES= (compose's empty default): auto

    @field_validator("public_ip", "pipe_host")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.room_state == "redis" and not self.redis_url:
            raise ValueError("room_state=redis needs a redis_url")
        if self.media_port_min > self.media_port_max:
            raise ValueError(
                f"media_port_min ({self.media_port_min}) is above media_port_max "
                f"({self.media_port_max})"
            )
        if self.pipe_port_min > self.pipe_port_max:
            raise ValueError(
                f"pipe_port_min ({self.pipe_port_min}) is above pipe_port_max "
                f"({self.pipe_port_max})"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.self_signed and self.tls_cert is not None:
            raise ValueError("self_signed and tls_cert exclude each other")
        if self.auth == "jwt":
            if self.jwt_algorithm == "HS256" and (
                self.jwt_secret is None or len(self.jwt_secret.get_secret_value()) < 32
            ):
                raise ValueError("auth=jwt with HS256 needs a jwt_secret of 32+ characters")
            if self.jwt_algorithm != "HS256" and self.jwt_public_key_file is None:
                raise ValueError(f"auth=jwt with {self.jwt_algorithm} needs jwt_public_key_file")
        if self.oidc_issuer is not None:
            if not self.oidc_client_id or self.oidc_client_secret is None:
                raise ValueError("oidc_issuer needs oidc_client_id and oidc_client_secret")
            if self.session_secret is None:
                raise ValueError(
                    "oidc_issuer needs a session_secret (32+ characters, the same on every node)"
                )
        for name, token in (
            ("admin_token", self.admin_token),
            ("session_secret", self.session_secret),
            ("metrics_token", self.metrics_token),
        ):
            if token is not None and len(token.get_secret_value()) < 32:
                raise ValueError(f"{name} must have at least 32 characters")
        if self.turn_secret is not None and len(self.turn_secret.get_secret_value()) < 16:
            raise ValueError("turn_secret must have at least 16 characters")
        if self.ice_transport_policy == "relay" and (
            self.turn_secret is None or not any(u.startswith("turn") for u in self.ice_servers)
        ):
            raise ValueError(
                "ice_transport_policy=relay needs turn_secret and a turn: URL in ice_servers"
            )
        return self

    @property
    def pipes_on(self) -> bool:
        """Whether this process pipes rooms' media to others: ``pipes`` if set, else whether
        it is one of several processes (a Redis they share: ``--workers`` sets one too)."""
        if self.pipes is not None:
            return self.pipes
        return self.redis_url is not None or self.workers > 1

    @property
    def oidc(self) -> bool:
        """Whether people may sign in with an OpenID Connect provider."""
        return self.oidc_issuer is not None

    @property
    def host_rule(self) -> tuple[str, str] | None:
        """``(claim, value)`` of ``oidc_hosts``; ``None`` for ``any``."""
        if self.oidc_hosts == "any":
            return None
        claim, _, value = self.oidc_hosts.partition("=")
        return claim.strip(), value.strip()

    @property
    def tls(self) -> bool:
        """Whether the server itself speaks HTTPS."""
        return self.tls_cert is not None or self.self_signed

    @property
    def public_origin(self) -> str | None:
        """The origin (scheme://host[:port]) of ``public_url``, if set."""
        return _origin_of(self.public_url, "") if self.public_url else None


def _origin_of(url: str, expected: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not {expected}")
    return f"{parts.scheme}://{parts.netloc}".lower()
