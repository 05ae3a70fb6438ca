"""HTTPS without a proxy: a given certificate, or one generated at start for a LAN meeting.

Browsers give cameras and microphones only to secure contexts (https, or http on localhost).
``--self-signed`` makes one certificate valid for the listening address, ``public_url``'s host,
``localhost`` and the machine's own addresses; its SHA-256 fingerprint is logged so people can
check what their browser asks them to trust.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from veche.settings import Settings

__all__ = ["self_signed_certificate", "server_ssl_context"]

log = logging.getLogger(__name__)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context to serve with, or ``None`` for plain HTTP."""
    if settings.tls_cert and settings.tls_key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        return context
    if not settings.self_signed:
        return None
    names = _names(settings)
    cert_pem, key_pem, fingerprint = self_signed_certificate(names)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as directory:
        cert_file, key_file = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)
        context.load_cert_chain(cert_file, key_file)
    log.info("self-signed certificate", extra={"names": ",".join(names), "sha256": fingerprint})
    return context


def _names(settings: Settings) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    if settings.host not in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
        names.append(settings.host)
    else:
        names += _local_addresses()
    if settings.public_url:
        host = urlsplit(settings.public_url).hostname
        if host:
            names.append(host)
    if settings.public_ip:
        names.append(settings.public_ip)
    return list(dict.fromkeys(names))


def _local_addresses() -> list[str]:
    addresses = []
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addresses.append(str(info[4][0]))
    except OSError:
        pass
    return addresses


def self_signed_certificate(names: list[str], *, days: int = 365) -> tuple[bytes, bytes, str]:
    """A new EC key and a certificate for ``names`` (DNS names or IP addresses); returns PEM
    certificate, PEM key and the certificate's SHA-256 fingerprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex(":")
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        fingerprint,
    )
