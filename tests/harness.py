"""Test harness: the captured AdmissionReview fixtures, TLS files and a real mlgate server.

``tests/fixtures/`` is a copy of the AdmissionReview documents a real kube-apiserver v1.36.2
sent, and the manifests that produced them (see its README).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.authority import build_ca, build_serving_cert

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REVIEWS = FIXTURES / "admission-reviews"


def review_files() -> list[Path]:
    return sorted(REVIEWS.glob("*.json"))


def load_review(name: str) -> dict[str, Any]:
    """A captured AdmissionReview by file name (with or without ``.json``)."""
    path = REVIEWS / (name if name.endswith(".json") else f"{name}.json")
    review: dict[str, Any] = json.loads(path.read_text())
    return review


def webhook_of(path: Path) -> str:
    """``mutate`` or ``validate``: the endpoint the API server sent this fixture to."""
    return path.name.split("-")[1]


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def write_tls_files(folder: Path) -> TlsFiles:
    """A CA and a serving certificate for localhost/127.0.0.1 written into ``folder``."""
    ca = build_ca(common_name="mlgate test CA")
    leaf = build_serving_cert(ca=ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    files = TlsFiles(ca=folder / "ca.crt", cert=folder / "tls.crt", key=folder / "tls.key")
    files.ca.write_bytes(ca.cert_pem)
    files.cert.write_bytes(leaf.cert_pem)
    files.key.write_bytes(leaf.key_pem)
    files.key.chmod(0o600)
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context that trusts only our CA and checks the host name."""
    return ssl.create_default_context(cafile=str(ca_file))


@dataclass
class RunningServer:
    """A real ``mlgate serve`` (gunicorn over TLS) started for a test."""

    process: subprocess.Popen[bytes]
    port: int
    ca: Path
    log_file: Path

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@contextlib.contextmanager
def run_server(
    *,
    tls: TlsFiles,
    workdir: Path,
    policies: Path | None = None,
    workers: int = 2,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    ready_timeout: float = 30,
) -> Iterator[RunningServer]:
    """Start ``mlgate serve`` on a free loopback port and wait until it answers /healthz."""
    port = free_port()
    log_file = workdir / f"server-{port}.log"
    args = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--bind", f"127.0.0.1:{port}",
        "--cert", str(tls.cert), "--key", str(tls.key),
        "--state-dir", str(workdir / "state"),
        "--workers", str(workers),
        "--no-cluster",
        *(["--policies", str(policies)] if policies is not None else []),
        *extra_args,
    ]  # fmt: skip
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
    server = RunningServer(process=process, port=port, ca=tls.ca, log_file=log_file)
    try:
        wait_until_healthy(server, timeout=ready_timeout)
        yield server
    finally:
        server.stop()


def wait_until_healthy(server: RunningServer, *, timeout: float) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    context = client_context(server.ca)
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not become healthy in {timeout}s:\n{server.log()}")
