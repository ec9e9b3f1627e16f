"""Certificate properties: SANs, key usage, chain, lifetimes, and a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs.authority import KeyPair, KeyType, build_ca, build_serving_cert, service_dns_names

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SERVICE_NAMES = [
    "mlgate",
    "mlgate.mlgate-system",
    "mlgate.mlgate-system.svc",
    "mlgate.mlgate-system.svc.cluster.local",
]


def build_pair(key_type: KeyType, now: dt.datetime = NOW) -> tuple[KeyPair, KeyPair]:
    ca = build_ca(valid_for=dt.timedelta(days=730), key_type=key_type, now=now)
    leaf = build_serving_cert(
        ca=ca,
        dns_names=service_dns_names("mlgate", "mlgate-system"),
        ip_addresses=["127.0.0.1"],
        valid_for=dt.timedelta(days=90),
        key_type=key_type,
        now=now,
    )
    return ca, leaf


# Certificate generation is slow (RSA especially): once per module and key type.
PAIRS = {key_type: build_pair(key_type) for key_type in ("ecdsa-p256", "rsa-2048")}
KEY_TYPES = pytest.mark.parametrize("key_type", list(PAIRS), ids=list(PAIRS))


@KEY_TYPES
def test_serving_cert_names_every_service_dns_name_and_the_extra_ip(key_type: KeyType) -> None:
    leaf = PAIRS[key_type][1].certificate
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == SERVICE_NAMES
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]


@pytest.mark.parametrize(
    ("key_type", "key_class", "key_encipherment"),
    [("ecdsa-p256", ec.EllipticCurvePrivateKey, False), ("rsa-2048", rsa.RSAPrivateKey, True)],
    ids=["ecdsa-signs-only", "rsa-also-enciphers"],
)
def test_serving_cert_is_for_server_auth_only(
    key_type: KeyType, key_class: type, key_encipherment: bool
) -> None:
    leaf = PAIRS[key_type][1]
    cert = leaf.certificate
    assert isinstance(leaf.private_key, key_class)
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment is key_encipherment
    assert not usage.value.key_cert_sign
    ext_usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(ext_usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


@KEY_TYPES
def test_ca_may_sign_leaf_certificates_only(key_type: KeyType) -> None:
    ca = PAIRS[key_type][0].certificate
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign


@pytest.mark.parametrize(
    "server_name",
    [*SERVICE_NAMES, "127.0.0.1"],
    ids=["short", "namespaced", "svc", "fqdn", "ip"],
)
@KEY_TYPES
def test_chain_verifies_for_every_name_the_api_server_may_use(
    key_type: KeyType, server_name: str
) -> None:
    ca, leaf = PAIRS[key_type]
    subject: verification.Subject
    try:
        subject = x509.IPAddress(ipaddress.ip_address(server_name))
    except ValueError:
        subject = x509.DNSName(server_name)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca.certificate]))
        .time(NOW + dt.timedelta(days=1))
        .build_server_verifier(subject)
    )
    chain = verifier.verify(leaf.certificate, [])
    assert chain[-1] == ca.certificate


@KEY_TYPES
def test_chain_does_not_verify_under_another_ca(key_type: KeyType) -> None:
    other_ca = build_ca(key_type=key_type, now=NOW)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([other_ca.certificate]))
        .time(NOW + dt.timedelta(days=1))
        .build_server_verifier(x509.DNSName("mlgate.mlgate-system.svc"))
    )
    with pytest.raises(verification.VerificationError):
        verifier.verify(PAIRS[key_type][1].certificate, [])


@pytest.mark.parametrize(
    ("ca_days", "leaf_days", "expected_leaf_days"),
    [(730, 90, 90), (30, 90, 30), (3650, 397, 397)],
    ids=["leaf-lifetime-as-asked", "leaf-never-outlives-its-ca", "long-leaf"],
)
def test_lifetimes_are_as_asked_and_backdated_for_clock_skew(
    ca_days: int, leaf_days: int, expected_leaf_days: int
) -> None:
    ca = build_ca(valid_for=dt.timedelta(days=ca_days), now=NOW)
    leaf = build_serving_cert(
        ca=ca, dns_names=["x"], valid_for=dt.timedelta(days=leaf_days), now=NOW
    ).certificate
    assert ca.certificate.not_valid_after_utc == NOW + dt.timedelta(days=ca_days)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(days=expected_leaf_days)
    assert leaf.not_valid_before_utc < NOW


def test_expired_leaf_fails_verification() -> None:
    ca, leaf = PAIRS["ecdsa-p256"]
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([ca.certificate]))
        .time(NOW + dt.timedelta(days=91))
        .build_server_verifier(x509.DNSName("mlgate"))
    )
    with pytest.raises(verification.VerificationError):
        verifier.verify(leaf.certificate, [])


@KEY_TYPES
def test_tls_handshake_succeeds_with_the_ca_as_only_trust_anchor(key_type: KeyType) -> None:
    # A real handshake checks against the real clock.
    ca, leaf = build_pair(key_type, dt.datetime.now(dt.UTC))
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert_file.write_bytes(leaf.cert_pem)
        key_file.write_bytes(leaf.key_pem)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=ca.cert_pem.decode())
    peer = handshake(client, server, server_name="mlgate.mlgate-system.svc")
    assert peer["subject"] == ((("commonName", "mlgate"),),)


def handshake(
    client: ssl.SSLContext, server: ssl.SSLContext, *, server_name: str
) -> ssl._PeerCertRetDictType:
    """Run a TLS handshake in memory and return the server certificate the client saw."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=server_name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = c.getpeercert()
    assert peer is not None
    return peer
