"""Build the Veche image for the docker test, outside the test network namespace (it needs the
Debian mirror and PyPI): a debootstrap base (no image registry is reachable here), then
``docker build`` with a private engine, saved to ``.venv/docker/veche-test.tar``.

Usage: ``python tests/docker/build_image.py`` (as root; ``make test-docker`` runs it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.docker.test_compose import IMAGE, ROOT, _run, dockerd

BASE_CACHE = Path(os.environ.get("VECHE_DOCKER_BASE_CACHE", "/var/tmp/veche-docker-base.tar"))


def base_tarball(work: Path) -> Path:
    """A minimal Debian with Python, made by debootstrap (cached between runs)."""
    if BASE_CACHE.exists():
        return BASE_CACHE
    rootfs = work / "rootfs"
    _run(
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        "bookworm",
        str(rootfs),
        "http://deb.debian.org/debian",
        timeout=900,
    )
    tarball = work / "base.tar"
    _run("tar", "-C", str(rootfs), "-cf", str(tarball), ".")
    shutil.rmtree(rootfs, ignore_errors=True)
    with contextlib.suppress(OSError):
        BASE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tarball, BASE_CACHE)
    return tarball


def main() -> int:
    """Build and save the image; exit status 0 on success."""
    with tempfile.TemporaryDirectory(prefix="veche-docker-") as directory:
        work = Path(directory)
        tarball = base_tarball(work)
        # No bridge and no iptables: this engine only builds, with the host's network.
        with dockerd(work, "--bridge=none") as env:
            _run("sh", "-c", f"docker import - veche-base:raw < {tarball}", env=env)
            # This machine reaches PyPI through its own certificate authority: the base trusts
            # the same bundle, for the system and for pip.
            context = work / "base-context"
            context.mkdir()
            shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", context / "ca.crt")
            (context / "pip.conf").write_text(
                "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n", encoding="utf-8"
            )
            (context / "Dockerfile").write_text(
                "FROM veche-base:raw\n"
                "COPY ca.crt /etc/ssl/certs/ca-certificates.crt\n"
                "COPY pip.conf /etc/pip.conf\n",
                encoding="utf-8",
            )
            _run("docker", "build", "-t", "veche-base:test", str(context), env=env)
            _run(
                "docker",
                "build",
                "--network",
                "host",
                "--build-arg",
                "BASE=veche-base:test",
                "-f",
                str(ROOT / "docker" / "Dockerfile"),
                "-t",
                "veche:test",
                str(ROOT),
                env=env,
                timeout=1200,
            )
            # No registry serves coturn here: Debian's, on the same base.
            coturn = work / "coturn-context"
            coturn.mkdir()
            (coturn / "Dockerfile").write_text(
                "FROM veche-base:test\n"
                "RUN apt-get update && apt-get install -y --no-install-recommends coturn"
                " && rm -rf /var/lib/apt/lists/*\n"
                'ENTRYPOINT ["turnserver"]\n',
                encoding="utf-8",
            )
            _run(
                "docker",
                "build",
                "--network",
                "host",
                "-t",
                "veche-coturn:test",
                str(coturn),
                env=env,
                timeout=900,
            )
            IMAGE.parent.mkdir(parents=True, exist_ok=True)
            _run("docker", "save", "-o", str(IMAGE), "veche:test", "veche-coturn:test", env=env)
    print(f"saved {IMAGE}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
