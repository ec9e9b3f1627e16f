"""Build a CA and serving certificates with ``cryptography``: pure functions, no files.

ECDSA P-256 by default: signing costs ~33 us against ~0.7 ms for RSA-2048, which is most of a
TLS handshake's server CPU (PERFORMANCE.md). RSA (2048 bits or more) is there for API servers
or policies that insist on it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

# Backdate certificates a little: clocks of the API server and the webhook may disagree.
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def private_key(self) -> PrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError(f"unsupported key type {type(key).__name__}")
        return key


def generate_private_key(key_type: KeyType = "ecdsa-p256") -> PrivateKey:
    """A new private key of the given type."""
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    bits = int(key_type.removeprefix("rsa-"))
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach a Service: short, namespaced and FQDN."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def build_ca(
    *,
    common_name: str = "mlgate-ca",
    valid_for: dt.timedelta = dt.timedelta(days=5 * 365),
    key_type: KeyType = "ecdsa-p256",
    now: dt.datetime | None = None,
) -> KeyPair:
    """A self-signed CA that may sign serving certificates only (path length 0)."""
    now = now or dt.datetime.now(dt.UTC)
    key = generate_private_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid_for)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def build_serving_cert(
    *,
    ca: KeyPair,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    valid_for: dt.timedelta = dt.timedelta(days=90),
    key_type: KeyType = "ecdsa-p256",
    now: dt.datetime | None = None,
) -> KeyPair:
    """A TLS server certificate for the given names, signed by ``ca``."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    now = now or dt.datetime.now(dt.UTC)
    ca_cert = ca.certificate
    key = generate_private_key(key_type)
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    not_after = min(now + valid_for, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .sign(ca.private_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
