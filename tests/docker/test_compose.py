"""The Docker image and compose file, for real: start the image with docker compose and hold a
browser call through the published ports. Marked ``docker`` (minutes); ``make test-docker``
first builds the image outside the test namespace (``tests/docker/build_image.py``: debootstrap
base, since no image registry is reachable here, then ``docker build``), then runs this test
inside it. ``.ci/run`` does so when a Docker engine can start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.conftest import REMOTE_VIDEO_PLAYS, chromium
from tests.integration.serverproc import stop
from tests.integration.turnclient import TurnClient
from veche.turn import turn_credentials

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = [str(ROOT / ".venv" / "bin" / "docker-compose")]
FILES = [
    "-f",
    str(ROOT / "docker" / "compose.yaml"),
    "-f",
    str(Path(__file__).with_name("compose.test.yaml")),
]
IMAGE = ROOT / ".venv" / "docker" / "veche-test.tar"

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run dockerd"),
    pytest.mark.skipif(
        shutil.which("dockerd") is None or shutil.which("debootstrap") is None,
        reason="needs docker.io and debootstrap (Debian packages)",
    ),
    pytest.mark.skipif(
        os.environ.get("VECHE_IN_NETNS") != "1",
        reason="runs inside the private network namespace of make test",
    ),
    pytest.mark.skipif(not IMAGE.exists(), reason="no image: run make test-docker"),
]


def _run(*command: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def dockerd(work: Path, *extra: str) -> Iterator[dict[str, str]]:
    """A private Docker engine (its own data, runtime and socket); stopped by PID."""
    data, runtime = work / "data", work / "exec"
    socket = work / "docker.sock"
    log = open(work / "dockerd.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            "dockerd",
            f"--data-root={data}",
            f"--exec-root={runtime}",
            f"--pidfile={work / 'docker.pid'}",
            f"--host=unix://{socket}",
            "--iptables=false",
            "--ip6tables=false",
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {**os.environ, "DOCKER_HOST": f"unix://{socket}", "DOCKER_BUILDKIT": "0"}
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode:
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise AssertionError((work / "dockerd.log").read_text())
            time.sleep(0.5)
        yield env
    finally:
        stop(process, grace=30)
        log.close()
        netns = runtime / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], check=False)


def _check_coturn(secret: str) -> None:
    """coturn from the compose file takes Veche's credentials, refuses loopback peers and lets
    relays reach Veche's own address."""
    deadline = time.monotonic() + 30
    while True:
        username, password = turn_credentials(secret, "docker-test", ttl=600, now=time.time())
        client = TurnClient(("10.99.0.1", 3478), username, password)
        try:
            error, relayed = client.allocate()
            assert error is None
            assert relayed is not None
            assert client.permit("127.0.0.1") == 403
            assert client.permit("10.99.0.1") is None
            return
        except OSError:
            assert time.monotonic() < deadline, "coturn does not answer on 3478"
            time.sleep(1)
        finally:
            client.close()


async def test_compose_image_serves_a_call(tmp_path: Path) -> None:
    """Start the built images with docker compose: Veche runs as a non-root user and reports
    healthy, coturn accepts Veche's credentials with the shipped configuration, and two
    Chromium participants see each other through the published ports."""
    with dockerd(tmp_path) as env:
        _run("docker", "load", "-i", str(IMAGE), env=env)
        compose_env = {
            **env,
            "VECHE_DOMAIN": "127.0.0.1",
            "VECHE_PUBLIC_IP": "10.99.0.1",
            "TURN_SECRET": "docker-test-secret-0123456789",
        }
        _run(*COMPOSE, *FILES, "up", "-d", "veche", "coturn", env=compose_env, timeout=300)
        try:
            deadline = time.monotonic() + 60
            user = _run("docker", "exec", "veche-veche-1", "id", "-u", env=env).strip()
            assert user == "10001"
            while "healthy" not in _run(
                "docker",
                "inspect",
                "--format",
                "{{.State.Health.Status}}",
                "veche-veche-1",
                env=env,
            ):
                assert time.monotonic() < deadline, _run(*COMPOSE, *FILES, "logs", env=compose_env)
                time.sleep(1)
            _check_coturn(compose_env["TURN_SECRET"])
            async with chromium(fake_ui=True) as browser:
                pages = []
                for name in ("Ada", "Bob"):
                    context = await browser.new_context(base_url="http://127.0.0.1:18080")
                    page = await context.new_page()
                    await page.goto(f"/r/docker?name={name}&join=1")
                    pages.append(page)
                for page in pages:
                    await page.wait_for_function(REMOTE_VIDEO_PLAYS, timeout=30000)
        finally:
            subprocess.run([*COMPOSE, *FILES, "down", "-t", "5"], env=compose_env, check=False)
