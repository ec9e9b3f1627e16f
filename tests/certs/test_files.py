"""Certificate files: modes, refusal to overwrite, and the atomic ``..data`` swap."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from certs.authority import build_ca, build_serving_cert
from certs.files import (
    CertificateFiles,
    CertificateFilesExistError,
    publish_certificate_files,
    read_certificate_files,
    write_certificate_files,
)

CA = build_ca()
FILES = [
    CertificateFiles(
        ca_bundle_pem=CA.cert_pem,
        serving=build_serving_cert(ca=CA, dns_names=[f"svc-{n}"], valid_for=dt.timedelta(days=1)),
    )
    for n in range(2)
]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("name", "mode"),
    [("ca.crt", 0o644), ("tls.crt", 0o644), ("tls.key", 0o600)],
    ids=["ca-readable", "cert-readable", "key-owner-only"],
)
@pytest.mark.parametrize("writer", ["in-place", "published"])
def test_files_are_written_with_their_modes(
    tmp_path: Path, writer: str, name: str, mode: int
) -> None:
    if writer == "in-place":
        write_certificate_files(tmp_path, files=FILES[0])
    else:
        publish_certificate_files(tmp_path, files=FILES[0])
    assert mode_of(tmp_path / name) == mode
    assert read_certificate_files(tmp_path) == FILES[0]


@pytest.mark.parametrize(
    ("force", "expected"),
    [(False, 0), (True, 1)],
    ids=["refuses-without-force", "overwrites-with-force"],
)
def test_existing_files_are_only_overwritten_with_force(
    tmp_path: Path, force: bool, expected: int
) -> None:
    write_certificate_files(tmp_path, files=FILES[0])
    if force:
        write_certificate_files(tmp_path, files=FILES[1], force=True)
    else:
        with pytest.raises(CertificateFilesExistError, match="--force"):
            write_certificate_files(tmp_path, files=FILES[1])
    assert read_certificate_files(tmp_path) == FILES[expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]


def test_refusal_writes_nothing_when_only_one_file_exists(tmp_path: Path) -> None:
    (tmp_path / "tls.key").write_bytes(b"keep me")
    with pytest.raises(CertificateFilesExistError):
        write_certificate_files(tmp_path, files=FILES[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tls.key"]
    assert (tmp_path / "tls.key").read_bytes() == b"keep me"


def test_publish_swaps_every_file_through_one_data_symlink(tmp_path: Path) -> None:
    first = publish_certificate_files(tmp_path, files=FILES[0])
    second = publish_certificate_files(tmp_path, files=FILES[1])
    assert os.readlink(tmp_path / "..data") == second.name
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert os.readlink(tmp_path / name) == f"..data/{name}"
    assert not first.exists()
    assert read_certificate_files(tmp_path) == FILES[1]


def test_missing_files_read_as_none(tmp_path: Path) -> None:
    assert read_certificate_files(tmp_path) is None
