"""``mlgate certs generate`` end to end through argparse, and its refusals."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certs.cli import register
from certs.files import read_certificate_files


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mlgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@dataclass(frozen=True)
class GenerateCase:
    extra: tuple[str, ...]
    key_class: type
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    leaf_days: int = 360


@pytest.mark.parametrize(
    "case",
    [
        GenerateCase(extra=(), key_class=ec.EllipticCurvePrivateKey),
        GenerateCase(
            extra=("--key-type", "rsa-2048", "--leaf-months", "3"),
            key_class=rsa.RSAPrivateKey,
            leaf_days=90,
        ),
        GenerateCase(
            extra=("--extra-san", "mlgate.example.com", "--extra-san", "10.0.0.7"),
            key_class=ec.EllipticCurvePrivateKey,
            dns=("mlgate.example.com",),
            ips=("10.0.0.7",),
        ),
    ],
    ids=["defaults-ecdsa", "rsa-three-months", "extra-dns-and-ip"],
)
def test_generate_writes_a_verifiable_set_for_the_service(
    tmp_path: Path, case: GenerateCase
) -> None:
    extra, key_class, dns, ips, leaf_days = (
        case.extra,
        case.key_class,
        case.dns,
        case.ips,
        case.leaf_days,
    )
    code = run_cli(
        "certs",
        "generate",
        "--service",
        "mlgate",
        "--namespace",
        "ml",
        "--out",
        str(tmp_path),
        *extra,
    )
    assert code == 0
    files = read_certificate_files(tmp_path)
    assert files is not None
    assert isinstance(files.serving.private_key, key_class)
    leaf = files.serving.certificate
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = ["mlgate", "mlgate.ml", "mlgate.ml.svc", "mlgate.ml.svc.cluster.local", *dns]
    assert sans.get_values_for_type(x509.DNSName) == expected
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(i) for i in ips]
    leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca_bundle_pem))
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime - dt.timedelta(days=leaf_days) == dt.timedelta(minutes=5)


@pytest.mark.parametrize(("force", "code"), [([], 1), (["--force"], 0)], ids=["refuses", "forced"])
def test_generate_twice_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], force: list[str], code: int
) -> None:
    argv = ["certs", "generate", "--service", "s", "--namespace", "n", "--out", str(tmp_path)]
    assert run_cli(*argv) == 0
    before = (tmp_path / "tls.crt").read_bytes()
    assert run_cli(*argv, *force) == code
    assert ((tmp_path / "tls.crt").read_bytes() == before) is (code == 1)
    if code == 1:
        assert "refusing to overwrite" in capsys.readouterr().err


def test_inject_without_configuration_fails_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ca.crt").write_text("")
    code = run_cli(
        "certs",
        "inject",
        "--ca",
        str(tmp_path / "ca.crt"),
        "--kubeconfig",
        str(tmp_path / "missing-kubeconfig"),
    )
    assert code == 1
    assert "no usable Kubernetes configuration" in capsys.readouterr().err
