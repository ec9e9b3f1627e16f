"""``mlgate serve --manage-certs`` against a real kube-apiserver.

The server starts with nothing but an empty Secret: it must create the CA and serving pair in
the Secret, write the files it serves, put the CA into both webhook configurations' caBundle,
and the API server must then reach it over TLS (a bad Deployment is denied, a good one mutated).
These configurations select their own namespace label, so they never see the other tests'
namespaces.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certs.manager import fingerprint_bundle, fingerprint_pem
from tests.e2e.controlplane import ControlPlane
from tests.e2e.test_admission import BAD, GOOD, apply, container_env, manifest_in, stored
from tests.e2e.webhooks import local_webhook_configurations
from tests.harness import ROOT, RunningServer, free_port, wait_until_healthy

OWN_NAMESPACE = "mlgate-managed"
TARGET = "ml-managed"
LABEL = "mlgate.io/managed-e2e"
NAME = "mlgate-managed"


def read_object(plane: ControlPlane, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return found


@pytest.fixture(scope="module")
def managed_plane(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, Path]]:
    workdir = tmp_path_factory.mktemp("managed")
    control_plane.create_namespace(OWN_NAMESPACE)
    control_plane.create_namespace(TARGET, labels={LABEL: "true"})
    control_plane.kubectl(
        "create", "secret", "generic", "mlgate-certs", "-n", OWN_NAMESPACE
    )  # empty, as manifests/base/secret.yaml ships it
    port = free_port()
    for configuration in local_webhook_configurations(
        url=f"https://127.0.0.1:{port}", ca_pem=None, name=NAME
    ):
        for webhook in configuration["webhooks"]:
            webhook["namespaceSelector"] = {"matchLabels": {LABEL: "true"}}
        control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(configuration))
    cert_dir = workdir / "certs"
    log_file = workdir / "mlgate.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "webhook.cli", "serve",
                "--bind", f"127.0.0.1:{port}",
                "--manage-certs", "--cert-dir", str(cert_dir),
                "--namespace", OWN_NAMESPACE,
                "--cert-extra-san", "127.0.0.1",
                "--mutating-name", NAME, "--validating-name", NAME,
                "--replica-name", "replica-0",
                "--state-dir", str(workdir / "state"),
                "--workers", "1",
                "--kubeconfig", str(control_plane.kubeconfig),
            ],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    # The health check trusts what the manager wrote, once it is there.
    deadline = time.monotonic() + 60
    while not (cert_dir / "ca.crt").exists() and time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.2)
    server = RunningServer(process=process, port=port, ca=cert_dir / "ca.crt", log_file=log_file)
    try:
        wait_until_healthy(server, timeout=60)
        yield control_plane, cert_dir
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, NAME, "--ignore-not-found", check=False)
        server.stop()
        print(server.log()[-3000:])


def test_secret_files_and_cabundle_agree(managed_plane: tuple[ControlPlane, Path]) -> None:
    plane, cert_dir = managed_plane
    secret = read_object(plane, "secret", "mlgate-certs", "-n", OWN_NAMESPACE)
    bundle = base64.b64decode(secret["data"]["ca.crt"])
    leaf = base64.b64decode(secret["data"]["tls.crt"])
    assert (cert_dir / "ca.crt").read_bytes() == bundle
    assert fingerprint_pem((cert_dir / "tls.crt").read_bytes()) == fingerprint_pem(leaf)
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for webhook in read_object(plane, kind, NAME)["webhooks"]:
            published = base64.b64decode(webhook["clientConfig"]["caBundle"])
            assert fingerprint_bundle(published) == fingerprint_bundle(bundle)


def test_api_server_reaches_the_self_managed_webhook(
    managed_plane: tuple[ControlPlane, Path],
) -> None:
    plane, _ = managed_plane
    denied = apply(plane, manifest_in(BAD, TARGET))
    assert denied.returncode != 0
    assert 'admission webhook "validate.mlgate.io" denied the request' in denied.stderr
    good = manifest_in(GOOD, TARGET)
    admitted = apply(plane, good)
    assert admitted.returncode == 0, admitted.stderr
    assert container_env(stored(plane, good))["MODEL_NAME"] == "recommendation-model"
