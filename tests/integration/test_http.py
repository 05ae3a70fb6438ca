"""HTTP pages, redirects, health and headers; nothing served refers to another origin."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from veche.app import create_app
from veche.assets import web_root

Client = TestClient[Any, Any]

# Absolute URLs and protocol-relative references: any of these would make a browser contact
# another origin. An SVG namespace name is an identifier that is never fetched.
EXTERNAL = re.compile(r"(?:https?|wss?|ftp)://|(?:src|href|action)\s*=\s*[\"']//|url\(\s*[\"']?//")
NAMESPACES = ('xmlns="http://www.w3.org/2000/svg"', '"http://www.w3.org/2000/svg"')
"""Namespace names (never fetched): SVG's, in markup and in createElementNS."""
REFERENCE = re.compile(
    r"""(?:src|href|action)\s*=\s*["']([^"']+)["']"""  # HTML attributes
    r"""|(?:import|from)\s*\(?\s*["']([^"']+)["']"""  # ES module imports
    r"""|url\(\s*["']?([^"')]+)"""  # CSS
    r"""|fetch\(\s*[`"']([^`"'$]+)""",  # literal fetches
)


@pytest.fixture
async def client(aiohttp_client: Any, make_settings: Any) -> Client:
    result: Client = await aiohttp_client(create_app(make_settings()))
    return result


def _assert_security_headers(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert not re.search(r"https?:|wss?:|\*", csp), csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", ["/", "/r/team"])
async def test_html_pages_carry_security_headers(client: Client, path: str) -> None:
    """HTML pages are UTF-8 HTML with a strict CSP and the other protective headers."""
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    _assert_security_headers(response.headers)
    assert "<script" not in (await response.text()).replace('<script type="module" src=', "")


async def test_room_page_redirects_to_canonical_name(client: Client) -> None:
    """/r/Team goes to /r/team, keeping the query string."""
    response = await client.get("/r/Team?name=Ada&join=1", allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == "/r/team?name=Ada&join=1"


@pytest.mark.parametrize(
    ("settings", "headers", "secure"),
    [
        ({}, {}, False),
        ({}, {"X-Forwarded-Proto": "https"}, False),
        ({"trust_forwarded": True}, {"X-Forwarded-Proto": "http"}, False),
        ({"trust_forwarded": True}, {"X-Forwarded-Proto": "http, https"}, True),
        ({"trust_forwarded": True}, {"X-Forwarded-Proto": "https, http"}, False),
        ({"public_url": "https://meet.example.org"}, {}, True),
        ({"public_url": "http://meet.example.org"}, {}, False),
    ],
    ids=[
        "plain",
        "untrusted-proxy",
        "trusted-http",
        "trusted-https",
        "trusted-last-http",
        "https-public-url",
        "http-public-url",
    ],
)
async def test_session_cookie_is_secure_when_served_over_https(
    aiohttp_client: Any,
    make_settings: Any,
    settings: dict[str, Any],
    headers: dict[str, str],
    secure: bool,
) -> None:
    """The session cookie is Secure when the page went out over HTTPS: a trusted proxy's last
    X-Forwarded-Proto says so, or ``public_url`` is https; a header from no trusted proxy counts
    for nothing."""
    client = await aiohttp_client(create_app(make_settings(**settings)))
    response = await client.get("/r/team", headers=headers)
    assert response.status == 200
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("veche_session=")
    assert ("; Secure" in cookie) is secure, cookie


@pytest.mark.parametrize("path", ["/r/%252e%252e", "/r/a%20b", "/r/%3Cscript%3E", "/r/" + "x" * 65])
async def test_room_page_refuses_invalid_name(client: Client, path: str) -> None:
    """An invalid room name in the URL is a 404 with the start page (which says, in the
    visitor's language, what a meeting name may hold); the name is never echoed."""
    response = await client.get(path, allow_redirects=False)
    assert response.status == 404
    text = await response.text()
    assert 'id="form-error"' in text
    assert "%3Cscript" not in text
    assert "<script>" not in text


async def test_new_meeting_redirects_to_fresh_room(client: Client) -> None:
    """/new sends each visitor to a different generated room."""
    first = await client.get("/new", allow_redirects=False)
    second = await client.get("/new", allow_redirects=False)
    assert first.status == 303
    assert re.fullmatch(r"/r/[a-z0-9]{4}(-[a-z0-9]{4}){4}", first.headers["Location"])
    assert first.headers["Location"] != second.headers["Location"]


@pytest.mark.parametrize(
    ("query", "location"),
    [("Team", "/r/team"), ("../x", "/?error=invalid_room"), ("", "/?error=invalid_room")],
)
async def test_join_form_redirects(client: Client, query: str, location: str) -> None:
    """The landing page's join form lands in the room, or back home with an error code."""
    response = await client.get("/join", params={"room": query}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == location


async def test_healthz_reports_counts(client: Client) -> None:
    """/healthz is uncached JSON with a status and live counts."""
    response = await client.get("/healthz")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["status"] == "ok"
    assert body["rooms"] == 0
    assert body["participants"] == 0


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "javascript"),
        ("style.css", "text/css"),
        ("i18n/ru.json", "application/json"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
async def test_static_assets_have_types_and_cache_headers(
    client: Client, name: str, content_type: str
) -> None:
    """Assets get their media type, revalidation headers, and a 304 when unchanged."""
    response = await client.get(f"/static/{name}")
    assert response.status == 200
    assert content_type in response.headers["Content-Type"]
    assert response.headers["Cache-Control"] == "no-cache"
    assert "ETag" in response.headers
    again = await client.get(f"/static/{name}", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304


async def test_static_files_cannot_escape_web_root(client: Client) -> None:
    """Path traversal out of the static directory fails."""
    for path in ("/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml"):
        response = await client.get(path)
        assert response.status in (403, 404)


async def test_nothing_served_refers_to_another_origin(client: Client) -> None:
    """Crawl every page and every file of the client: no absolute URL to any origin, and every
    same-origin reference resolves."""
    queue = ["/", "/r/team"] + [
        "/static/" + path.relative_to(web_root()).as_posix()
        for path in sorted(web_root().rglob("*"))
        if path.is_file()
    ]
    seen: set[str] = set()
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        response = await client.get(url)
        assert response.status == 200, url
        _assert_security_headers(response.headers)
        text = await response.text()
        for namespace in NAMESPACES:
            text = text.replace(namespace, "")
        match = EXTERNAL.search(text)
        assert match is None, f"{url} refers to another origin: {text[match.start() :][:80]!r}"
        for found in REFERENCE.finditer(text):
            ref = next(group for group in found.groups() if group)
            target = urljoin(url, ref)
            if urlsplit(target).path in ("/new", "/join") or target.endswith("/"):
                continue  # redirects, and the directory part of a templated fetch
            queue.append(urlsplit(target).path)
    assert len(seen) >= 10
