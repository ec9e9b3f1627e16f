"""Certificate files on disk: ``ca.crt``, ``tls.crt`` and ``tls.key``, always replaced atomically.

Two ways to write them, because two readers exist:

- ``write_certificate_files`` writes the three files in place (temporary file, ``fsync``,
  ``rename``), key mode 0600, and refuses to overwrite without ``force``: what a person runs
  once with ``mlgate certs generate``.
- ``publish_certificate_files`` swaps the whole set at once the way the kubelet updates a
  mounted Secret: the files live in a timestamped directory, ``..data`` is a symlink to it and
  ``tls.crt`` is a symlink to ``..data/tls.crt``. One ``rename`` of ``..data`` switches every file,
  so a reader never sees a new certificate with an old key. The certificate manager uses it, and
  the server's reload treats both layouts alike.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from certs.authority import KeyPair

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
DATA_LINK = "..data"

CERT_MODE = 0o644
KEY_MODE = 0o600


class CertificateFilesError(Exception):
    """Certificate files could not be written or read."""


class CertificateFilesExistError(CertificateFilesError):
    """The files are already there and overwriting was not asked for."""


@dataclass(frozen=True)
class CertificateFiles:
    """What a serving replica needs: the trusted CA bundle and its own key pair."""

    ca_bundle_pem: bytes
    serving: KeyPair


def write_certificate_files(
    directory: Path, *, files: CertificateFiles, force: bool = False
) -> list[Path]:
    """Write ``ca.crt``, ``tls.crt`` and ``tls.key`` into ``directory``; return their paths.

    Each file is replaced atomically; the key is created with mode 0600 and never exists with a
    wider mode. Without ``force``, nothing is written if any of the three already exists.
    """
    directory.mkdir(parents=True, exist_ok=True)
    contents = _file_contents(files)
    paths = [directory / name for name in contents]
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing)
        raise CertificateFilesExistError(f"refusing to overwrite {names} (use --force)")
    for path, (data, mode) in zip(paths, contents.values(), strict=True):
        _write_atomically(path, data=data, mode=mode)
    return paths


def publish_certificate_files(directory: Path, *, files: CertificateFiles) -> Path:
    """Switch ``directory`` to ``files`` with one atomic symlink swap; return the new data dir.

    Layout (the kubelet's AtomicWriter): ``..<timestamp>/`` holds the files, ``..data`` points to
    it, and each name is a symlink into ``..data``. Older timestamped directories are removed
    after the swap.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    data_dir = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=directory))
    data_dir.chmod(0o755)
    for name, (data, mode) in _file_contents(files).items():
        _write_atomically(data_dir / name, data=data, mode=mode)

    link = directory / DATA_LINK
    staging = directory / f"{DATA_LINK}_tmp"
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    os.symlink(data_dir.name, staging)
    os.replace(staging, link)

    for name in _file_contents(files):
        path = directory / name
        target = f"{DATA_LINK}/{name}"
        if path.is_symlink() and os.readlink(path) == target:
            continue
        tmp = directory / f".{name}.link"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, path)
    _fsync_directory(directory)

    for child in directory.iterdir():
        stale = child.name.startswith("..") and child.name not in {DATA_LINK, data_dir.name}
        if stale and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
    return data_dir


def read_certificate_files(directory: Path) -> CertificateFiles | None:
    """The files in ``directory``, or None if any of them is missing."""
    try:
        return CertificateFiles(
            ca_bundle_pem=(directory / CA_FILE).read_bytes(),
            serving=KeyPair(
                cert_pem=(directory / CERT_FILE).read_bytes(),
                key_pem=(directory / KEY_FILE).read_bytes(),
            ),
        )
    except FileNotFoundError:
        return None


def _file_contents(files: CertificateFiles) -> dict[str, tuple[bytes, int]]:
    return {
        CA_FILE: (files.ca_bundle_pem, CERT_MODE),
        CERT_FILE: (files.serving.cert_pem, CERT_MODE),
        KEY_FILE: (files.serving.key_pem, KEY_MODE),
    }


def _write_atomically(path: Path, *, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600, so a key is never readable by others, even briefly.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        # rename replaces a symlink itself, never its target.
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
