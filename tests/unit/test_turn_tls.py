"""TURN REST credentials, the ICE servers each participant gets, and generated certificates."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress

from cryptography import x509

from veche.ice import client_ice_servers
from veche.settings import Settings
from veche.tls import self_signed_certificate
from veche.turn import turn_credentials


def test_turn_credentials_follow_the_turn_rest_scheme() -> None:
    """username = expiry:user, password = base64(HMAC-SHA1(secret, username))."""
    username, password = turn_credentials("s" * 20, "p-1", ttl=600, now=1000.7)
    assert username == "1600:p-1"
    expected = hmac.new(b"s" * 20, b"1600:p-1", hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_each_participant_gets_own_expiring_turn_credentials() -> None:
    """STUN URLs pass as they are; TURN URLs get credentials naming the participant; the
    secret appears nowhere in what a client receives."""
    settings = Settings(
        ice_servers="stun:turn.example.org:3478,turn:turn.example.org:3478,"
        "turns:turn.example.org:5349",
        turn_secret="a-very-secret-value",
        turn_ttl=3600,
    )
    servers = client_ice_servers(settings, "p-7", now=5000)
    assert servers[0].urls == ["stun:turn.example.org:3478"]
    assert servers[1].urls == ["turn:turn.example.org:3478", "turns:turn.example.org:5349"]
    assert servers[1].username == "8600:p-7"
    assert "a-very-secret-value" not in repr(servers) + repr(settings)
    other = client_ice_servers(settings, "p-8", now=5000)
    assert other[1].credential != servers[1].credential


def test_self_signed_certificate_names_addresses_and_hosts() -> None:
    """The generated certificate covers every name asked for, IPs as IP addresses."""
    cert_pem, key_pem, fingerprint = self_signed_certificate(
        ["localhost", "127.0.0.1", "meet.lan", "192.168.1.20"]
    )
    certificate = x509.load_pem_x509_certificate(cert_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "meet.lan"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("192.168.1.20"),
    ]
    assert b"PRIVATE KEY" in key_pem
    assert len(fingerprint.split(":")) == 32
