"""A real Kubernetes control plane for tests: etcd and kube-apiserver on loopback.

The controller-runtime envtest convention: ``KUBEBUILDER_ASSETS`` names a folder holding the
``etcd`` and ``kube-apiserver`` binaries; without them the e2e suite is skipped. No
controller-manager and no scheduler run, so nothing creates ServiceAccounts or Pods by itself:
``create_namespace`` adds the ``default`` ServiceAccount the ServiceAccount admission plugin
wants, and Deployments stay at their desired spec (which is all admission needs).

The API server gets a serving certificate from ``certs.authority`` (so clients verify it), a
static admin token in ``system:masters``, service-account keys made in the temp folder, and
``--endpoint-reconciler-type=none`` (it has no node to publish as the ``kubernetes`` endpoint).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client

from certs.authority import build_ca, build_serving_cert
from tests.harness import free_port

ASSETS_ENV = "KUBEBUILDER_ASSETS"
BINARIES = ("etcd", "kube-apiserver")


def find_assets() -> Path | None:
    """The folder named by ``KUBEBUILDER_ASSETS`` if it holds both binaries, else None."""
    folder = os.environ.get(ASSETS_ENV)
    if not folder:
        return None
    path = Path(folder)
    if all(os.access(path / name, os.X_OK) for name in BINARIES):
        return path
    return None


@dataclass
class ControlPlane:
    """A running etcd + kube-apiserver and an admin's ways in (kubeconfig, token, CA)."""

    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    workdir: Path

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration()
        configuration.host = self.url
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": f"Bearer {self.token}"}
        return client.ApiClient(configuration)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl on this machine against this control plane."""
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def create_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        """A namespace with its ``default`` ServiceAccount (no controller-manager makes it)."""
        core = client.CoreV1Api(self.api_client())
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
        )
        core.create_namespaced_service_account(
            name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        )


@contextlib.contextmanager
def run_control_plane(workdir: Path, *, assets: Path) -> Iterator[ControlPlane]:
    """Start etcd and kube-apiserver, wait until the API server is ready, stop both after."""
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = (workdir / "etcd.log").open("wb")
    etcd = subprocess.Popen(
        [
            str(assets / "etcd"),
            "--name=e2e",
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
            f"--initial-cluster=e2e=http://127.0.0.1:{peer_port}",
        ],
        stdout=etcd_log,
        stderr=subprocess.STDOUT,
    )
    apiserver: subprocess.Popen[bytes] | None = None
    try:
        files = _write_apiserver_files(workdir)
        token = files["token"].read_text().split(",")[0]
        api_log = (workdir / "kube-apiserver.log").open("wb")
        apiserver = subprocess.Popen(
            [
                str(assets / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--tls-cert-file={files['cert']}",
                f"--tls-private-key-file={files['key']}",
                f"--cert-dir={workdir / 'apiserver-certs'}",
                f"--token-auth-file={files['token']}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={files['sa_pub']}",
                f"--service-account-signing-key-file={files['sa_key']}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
            ],
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        plane = ControlPlane(
            url=f"https://127.0.0.1:{api_port}",
            token=token,
            ca_file=files["ca"],
            kubeconfig=workdir / "kubeconfig",
            workdir=workdir,
        )
        _write_kubeconfig(plane)
        _wait_ready(plane, processes={"etcd": etcd, "kube-apiserver": apiserver})
        yield plane
    finally:
        for process in (apiserver, etcd):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        etcd_log.close()
        shutil.rmtree(workdir / "etcd", ignore_errors=True)


def _write_apiserver_files(workdir: Path) -> dict[str, Path]:
    ca = build_ca(common_name="e2e kube-apiserver CA")
    leaf = build_serving_cert(
        ca=ca,
        dns_names=["localhost", "kubernetes", "kubernetes.default.svc"],
        ip_addresses=["127.0.0.1", "10.96.0.1"],
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = {
        "ca": (workdir / "ca.crt", ca.cert_pem),
        "cert": (workdir / "apiserver.crt", leaf.cert_pem),
        "key": (workdir / "apiserver.key", leaf.key_pem),
        "sa_key": (
            workdir / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        "sa_pub": (
            workdir / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        "token": (
            workdir / "tokens.csv",
            f'{secrets.token_hex(16)},admin,admin-uid,"system:masters"\n'.encode(),
        ),
    }
    for path, data in files.values():
        path.write_bytes(data)
        path.chmod(0o600)
    return {name: path for name, (path, _) in files.items()}


def _write_kubeconfig(plane: ControlPlane) -> None:
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": plane.url, "certificate-authority": str(plane.ca_file)},
            }
        ],
        "users": [{"name": "admin", "user": {"token": plane.token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        "current-context": "e2e",
    }
    plane.kubeconfig.write_text(json.dumps(config))
    plane.kubeconfig.chmod(0o600)


def _wait_ready(
    plane: ControlPlane, *, processes: dict[str, subprocess.Popen[bytes]], timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    request = urllib.request.Request(
        f"{plane.url}/readyz", headers={"Authorization": f"Bearer {plane.token}"}
    )
    last = ""
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                log = (plane.workdir / f"{name}.log").read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (OSError, urllib.error.URLError) as error:
            last = repr(error)
        time.sleep(0.5)
    log = (plane.workdir / "kube-apiserver.log").read_text(errors="replace")[-4000:]
    raise RuntimeError(f"kube-apiserver not ready after {timeout}s ({last}):\n{log}")
