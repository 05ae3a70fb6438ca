"""Sign-in with a real OpenID Connect provider process (``oidc-provider-mock``): the
authorization code flow through the provider's login form, the session cookie, who may host,
what guests get (``host-first``, ``deny``), sign-out, and refusals that leave everything else
working."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from veche.client import VecheClient
from veche.protocol import Error, Waiting, Welcome

from .oidcproc import ProviderProcess, cookie_header, run_provider, session, sign_in
from .redisproc import REDIS_SERVER, run_redis
from .serverproc import ServerProcess, free_port, run_server

pytestmark = pytest.mark.slow

SECRET = "a-session-secret-shared-by-every-node-0123"


def _env(provider: ProviderProcess | str, **extra: str) -> dict[str, str]:
    issuer = provider if isinstance(provider, str) else provider.issuer
    return {
        "VECHE_OIDC_ISSUER": issuer,
        "VECHE_OIDC_CLIENT_ID": "veche-test",
        "VECHE_OIDC_CLIENT_SECRET": "veche-test-secret",
        "VECHE_SESSION_SECRET": SECRET,
        "VECHE_OIDC_HOSTS": "groups=staff",
        **extra,
    }


@pytest.fixture(scope="module")
def provider() -> Iterator[ProviderProcess]:
    with run_provider() as started:
        yield started


@pytest.fixture(scope="module")
def server(provider: ProviderProcess) -> Iterator[ServerProcess]:
    env = _env(provider, VECHE_OIDC_GUESTS="host-first")
    with run_server("--empty-room-grace", "30", env=env) as started:
        yield started


async def _joined(server: ServerProcess, room: str, name: str, cookie: str | None = None) -> Any:
    """Connect (with a browser's cookie) and say hello; the client and the first answer."""
    client = await VecheClient.connect(server.ws, cookie=cookie)
    await client.send({"type": "hello", "version": 1, "room": room, "name": name})
    return client, await client.receive()


async def test_sign_in_sets_a_signed_lax_httponly_cookie_and_returns(
    server: ServerProcess,
) -> None:
    """Through the provider's login form the browser comes back to the page it left, with a
    sign-in cookie that is HttpOnly, SameSite=Lax, not Secure over plain HTTP, and expiring;
    /auth/me names the provider's display name and the host right."""
    async with session() as http:
        landed = await sign_in(http, server.http, "teacher", next_path="/r/physics-101")
        assert urlsplit(landed).path == "/r/physics-101"
        async with http.get(server.http + "/auth/me") as me:
            assert await me.json() == {
                "enabled": True,
                "signed_in": True,
                "name": "Tereza Teacher",
                "host": True,
                "name_editable": True,
                "guests": "host-first",
            }
    # The attributes, as the callback sets them.
    async with session() as http:
        login = server.http + "/auth/login?lang=fr"
        async with http.get(login, allow_redirects=False) as start:
            provider_url = start.headers["Location"]
            query = parse_qs(urlsplit(provider_url).query)
            assert query["ui_locales"] == ["fr"]
            assert query["code_challenge_method"] == ["S256"]
            assert query["response_type"] == ["code"]
            assert {"state", "nonce", "code_challenge"} <= set(query)
        async with http.get(provider_url) as form:
            login_url = form.url
        async with http.post(login_url, data={"sub": "student"}, allow_redirects=False) as back:
            callback = back.headers["Location"]
        async with http.get(callback, allow_redirects=False) as done:
            assert done.status == 303
            raw = [v for v in done.headers.getall("Set-Cookie") if v.startswith("veche_signin=")]
    (header,) = raw
    morsel = SimpleCookie(header)["veche_signin"]
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert not morsel["secure"]
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 43200
    assert morsel.value.count(".") == 2, "not a signed token"


async def test_staff_hosts_and_a_guest_waits_for_the_host_then_enters(
    server: ServerProcess,
) -> None:
    """host-first: a guest who comes first waits ("the meeting starts when the host joins");
    the staff member signs in, joins as moderator, and the guest enters by itself, marked as
    a guest beside the signed-in host."""
    guest, first = await _joined(server, "lecture-1", "Guest")
    assert isinstance(first, Waiting)
    assert first.for_host
    async with session() as http:
        await sign_in(http, server.http, "teacher")
        cookie = cookie_header(http, server.http + "/ws")
    host, welcome = await _joined(server, "lecture-1", "Prof", cookie)
    assert isinstance(welcome, Welcome)
    me = next(p for p in welcome.participants if p.id == welcome.participant_id)
    assert me.role == "moderator"
    assert me.signed_in
    assert me.name == "Prof", "the name is editable by default"
    entered = await guest.expect("welcome")
    assert isinstance(entered, Welcome)
    roles = {p.name: (p.role, p.signed_in) for p in entered.participants}
    assert roles == {"Prof": ("moderator", True), "Guest": ("participant", False)}
    for client in (guest, host):
        await client.ws.close()


async def test_a_signed_in_student_cannot_host(server: ServerProcess) -> None:
    """A signed-in person without the staff group waits for a host like a guest, and enters
    as a participant when the host comes."""
    async with session() as http:
        await sign_in(http, server.http, "student")
        cookie = cookie_header(http, server.http + "/ws")
    student, first = await _joined(server, "lecture-2", "Stepan", cookie)
    assert isinstance(first, Waiting)
    assert first.for_host
    async with session() as http:
        await sign_in(http, server.http, "teacher")
        teacher_cookie = cookie_header(http, server.http + "/ws")
    teacher, welcome = await _joined(server, "lecture-2", "Tereza", teacher_cookie)
    assert isinstance(welcome, Welcome)
    entered = await student.expect("welcome")
    assert isinstance(entered, Welcome)
    me = next(p for p in entered.participants if p.id == entered.participant_id)
    assert (me.role, me.signed_in) == ("participant", True)
    for client in (student, teacher):
        await client.ws.close()


async def test_sign_out_ends_the_session_and_the_providers(server: ServerProcess) -> None:
    """Sign-out clears the cookie and sends the browser to the provider's end-session
    endpoint (RP-initiated logout) with Veche's client id and the way back."""
    async with session() as http:
        await sign_in(http, server.http, "teacher")
        async with http.get(server.http + "/auth/logout", allow_redirects=False) as out:
            assert out.status == 303
            target = urlsplit(out.headers["Location"])
            assert target.path == "/oauth2/end_session"
            query = parse_qs(target.query)
            assert query["client_id"] == ["veche-test"]
            assert query["post_logout_redirect_uri"] == [server.http + "/"]
        async with http.get(server.http + "/auth/me") as me:
            assert (await me.json())["signed_in"] is False


async def test_a_state_that_does_not_match_is_refused(server: ServerProcess) -> None:
    """A callback whose state is not the one this browser was given (or with no sign-in
    under way, as a replayed callback is) signs nobody in: the start page says why."""
    async with session() as http:
        async with http.get(server.http + "/auth/login", allow_redirects=False) as start:
            provider_url = start.headers["Location"]
        async with http.get(provider_url) as form:
            login_url = form.url
        async with http.post(login_url, data={"sub": "teacher"}, allow_redirects=False) as back:
            callback = urlsplit(back.headers["Location"])
        query = parse_qs(callback.query)
        forged = f"{server.http}/auth/callback?code={query['code'][0]}&state=not-the-state"
        async with http.get(forged, allow_redirects=False) as refused:
            assert refused.headers["Location"] == "/?error=signin_failed"
        # The flow is over: the genuine callback replayed is refused too.
        genuine = f"{server.http}{callback.path}?{callback.query}"
        async with http.get(genuine, allow_redirects=False) as replayed:
            assert replayed.headers["Location"] == "/?error=signin_failed"
        async with http.get(server.http + "/auth/me") as me:
            assert (await me.json())["signed_in"] is False


async def test_a_replayed_callback_after_signing_in_is_refused(server: ServerProcess) -> None:
    """The code and state of a finished sign-in, presented again from another browser,
    sign nobody in."""
    async with session() as http:
        async with http.get(server.http + "/auth/login", allow_redirects=False) as start:
            provider_url = start.headers["Location"]
        async with http.get(provider_url) as form:
            login_url = form.url
        async with http.post(login_url, data={"sub": "teacher"}, allow_redirects=False) as back:
            callback = back.headers["Location"]
        async with http.get(callback, allow_redirects=False) as done:
            assert done.headers["Location"] == "/"
    async with session() as other, other.get(callback, allow_redirects=False) as replayed:
        assert replayed.headers["Location"] == "/?error=signin_failed"
        assert "veche_signin=" not in " ".join(replayed.headers.getall("Set-Cookie", []))


async def test_a_forged_cookie_is_a_guest(server: ServerProcess) -> None:
    """A sign-in cookie signed with another secret proves nothing: the holder is a guest."""
    from veche.signin import CookieSigner

    forged = CookieSigner("another-secret-of-at-least-thirty-two-chars").sign(
        "session",
        {"iss": "x", "sub": "teacher", "name": "Mallory", "host": True, "exp": 2**33},
    )
    client, first = await _joined(server, "lecture-3", "Mallory", f"veche_signin={forged}")
    assert isinstance(first, Waiting)
    await client.ws.close()


async def test_deny_refuses_guests_and_admits_the_signed_in(provider: ProviderProcess) -> None:
    """With oidc_guests=deny a guest's hello gets sign_in_required; a signed-in student joins
    (not as moderator, though first)."""
    with run_server(env=_env(provider, VECHE_OIDC_GUESTS="deny")) as denying:
        guest, answer = await _joined(denying, "seminar", "Guest")
        assert isinstance(answer, Error)
        assert answer.code == "sign_in_required"
        await guest.ws.close()
        async with session() as http:
            await sign_in(http, denying.http, "student")
            cookie = cookie_header(http, denying.http + "/ws")
        student, welcome = await _joined(denying, "seminar", "Stepan", cookie)
        assert isinstance(welcome, Welcome)
        assert welcome.participants[0].role == "participant"
        await student.ws.close()


async def test_provider_down_leaves_meetings_and_guests_alone() -> None:
    """With the provider unreachable, "Sign in" lands on the start page with an error it
    words in the visitor's language; guests still join."""
    dead = f"http://127.0.0.1:{free_port()}"
    with run_server(env=_env(dead, VECHE_OIDC_GUESTS="allow")) as lonely:
        login = lonely.http + "/auth/login"
        async with session() as http, http.get(login, allow_redirects=False) as start:
            assert start.status == 303
            assert start.headers["Location"] == "/?error=signin_unavailable"
        guest, welcome = await _joined(lonely, "open-day", "Visitor")
        assert isinstance(welcome, Welcome)
        assert welcome.participants[0].role == "participant", "a guest never moderates"
        await guest.ws.close()
        assert lonely.health()["status"] == "ok"


async def test_the_host_keeps_the_role_across_a_restart(
    provider: ProviderProcess, tmp_path: Path
) -> None:
    """After the server is killed and started again, the guest who reconnects first does not
    get the role; the host, on the same cookie (valid on the new process: no session was kept
    in memory), is moderator again."""
    port = free_port()
    env = _env(provider, VECHE_OIDC_GUESTS="allow", VECHE_DATA_DIR=str(tmp_path))
    flags = ("--empty-room-grace", "60", "--resume-grace", "30")
    async with session() as http:
        with run_server(*flags, env=env, port=port) as first:
            await sign_in(http, first.http, "teacher")
            cookie = cookie_header(http, first.http + "/ws")
            host = await VecheClient.connect(first.ws, cookie=cookie)
            await host.join("lab", "Tereza")
            guest = await VecheClient.connect(first.ws)
            token = (await guest.join("lab", "Guest")).resume_token
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(15)
            host.drop()
            guest.drop()
        with run_server(*flags, env=env, port=port) as second:
            guest = await VecheClient.connect(second.ws)
            back = await guest.join("lab", "Guest", resume=token)
            me = next(p for p in back.participants if p.id == back.participant_id)
            assert me.role == "participant", "the guest who came back first became moderator"
            host = await VecheClient.connect(second.ws, cookie=cookie)
            returned = await host.join("lab", "Tereza")
            me = next(p for p in returned.participants if p.id == returned.participant_id)
            assert (me.role, me.signed_in) == ("moderator", True)
            for client in (guest, host):
                await client.ws.close()
            assert "Traceback" not in second.output()


async def test_a_session_is_valid_on_every_node_that_shares_the_secret(
    server: ServerProcess, provider: ProviderProcess
) -> None:
    """Signed in on one node, the same cookie is a signed-in host on another node with the
    same session_secret (nothing sticky, nothing kept per node), and nobody on a node with
    another secret."""
    async with session() as http:
        await sign_in(http, server.http, "teacher")
        cookie = cookie_header(http, server.http + "/ws")
    same = _env(provider, VECHE_OIDC_GUESTS="host-first")
    other = {**same, "VECHE_SESSION_SECRET": "another-secret-of-at-least-thirty-two-chars"}
    with run_server(env=same) as second, run_server(env=other) as stranger:
        for node, signed_in in ((second, True), (stranger, False)):
            me_url, headers = node.http + "/auth/me", {"Cookie": cookie}
            async with session() as http, http.get(me_url, headers=headers) as me:
                assert (await me.json())["signed_in"] is signed_in
        host, welcome = await _joined(second, "lecture-4", "Tereza", cookie)
        assert isinstance(welcome, Welcome)
        assert welcome.participants[0].role == "moderator"
        await host.ws.close()


async def test_two_nodes_over_redis_relay_the_host_role(provider: ProviderProcess) -> None:
    """Two nodes sharing Redis and the session secret: a guest waits for the host on one
    node; the host, signed in on that node, joins through the other (relayed to the room's
    node), is moderator there, and the guest enters."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (make test installs it as root)")
    env = _env(provider, VECHE_OIDC_GUESTS="host-first")
    with run_redis() as redis:
        flags = ("--redis-url", redis.url)
        with run_server(*flags, env=env) as first, run_server(*flags, env=env) as second:
            guest, waiting = await _joined(first, "cluster-lecture", "Guest")
            assert isinstance(waiting, Waiting)
            assert waiting.for_host
            async with session() as http:
                await sign_in(http, first.http, "teacher")
                cookie = cookie_header(http, first.http + "/ws")
            host, welcome = await _joined(second, "cluster-lecture", "Tereza", cookie)
            assert isinstance(welcome, Welcome)
            me = next(p for p in welcome.participants if p.id == welcome.participant_id)
            assert (me.role, me.signed_in, me.name) == ("moderator", True, "Tereza")
            entered = await guest.expect("welcome")
            assert isinstance(entered, Welcome)
            for client in (guest, host):
                await client.ws.close()
