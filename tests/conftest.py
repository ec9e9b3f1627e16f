"""Fixtures shared by every test folder; the helpers themselves live in ``tests/harness.py``."""

from __future__ import annotations

import pytest

from tests.harness import TlsFiles, write_tls_files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a serving certificate for localhost/127.0.0.1, made once per test run."""
    return write_tls_files(tmp_path_factory.mktemp("tls"))
