"""mlgate in front of a real kube-apiserver: ``kubectl apply`` is mutated, or denied.

The serving certificate comes from ``mlgate certs generate``; ``mlgate serve`` runs on real
gunicorn over TLS on 127.0.0.1 with the control plane as its cluster; the webhook configurations
are the ones ``manifests/`` renders, with a url-based clientConfig and the generated caBundle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.controlplane import ControlPlane
from tests.e2e.webhooks import local_webhook_configurations
from tests.harness import FIXTURES, ROOT, RunningServer, free_port, wait_until_healthy
from tests.k8s_schema import validate_k8s

ENABLED = "ml-e2e"
NOT_ENABLED = "ml-e2e-off"
GOOD = FIXTURES / "manifests" / "01-recommendation.yaml"
BAD = FIXTURES / "manifests" / "02-gpu.yaml"  # image ...:latest


def mlgate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def admission_plane(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    workdir = tmp_path_factory.mktemp("mlgate")
    certs = workdir / "certs"
    mlgate(
        "certs", "generate", "--service", "mlgate", "--namespace", "mlgate-system",
        "--out", str(certs), "--extra-san", "127.0.0.1", cwd=workdir,
    )  # fmt: skip
    port = free_port()
    log_file = workdir / "mlgate.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "webhook.cli", "serve",
                "--bind", f"127.0.0.1:{port}",
                "--cert", str(certs / "tls.crt"), "--key", str(certs / "tls.key"),
                "--state-dir", str(workdir / "state"),
                "--workers", "1",
                "--kubeconfig", str(control_plane.kubeconfig),
            ],
            cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    server = RunningServer(process=process, port=port, ca=certs / "ca.crt", log_file=log_file)
    try:
        wait_until_healthy(server, timeout=60)
        for configuration in local_webhook_configurations(
            url=f"https://127.0.0.1:{port}", ca_pem=(certs / "ca.crt").read_bytes()
        ):
            control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(configuration))
        control_plane.create_namespace(ENABLED, labels={"mlgate.io/enabled": "true"})
        control_plane.create_namespace(NOT_ENABLED)
        yield control_plane
    finally:
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            control_plane.kubectl("delete", kind, "mlgate", "--ignore-not-found", check=False)
        server.stop()
        print(server.log()[-3000:])


def manifest_in(path: Path, namespace: str, *, name: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(path.read_text())
    obj["metadata"]["namespace"] = namespace
    if name:
        obj["metadata"]["name"] = name
    return obj


def apply(plane: ControlPlane, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=False)


def stored(plane: ControlPlane, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    out = plane.kubectl(
        "get", obj["kind"].lower(), meta["name"], "-n", meta["namespace"], "-o", "json"
    ).stdout
    found: dict[str, Any] = json.loads(out)
    return found


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_model_deployment_is_admitted_and_mutated(admission_plane: ControlPlane) -> None:
    obj = manifest_in(GOOD, ENABLED)
    result = apply(admission_plane, obj)
    assert result.returncode == 0, result.stderr
    deployment = stored(admission_plane, obj)
    env = container_env(deployment)
    # The model-defaults policy adds MODEL_NAME from the app label; the author did not.
    assert "MODEL_NAME" not in container_env(obj)
    assert env["MODEL_NAME"] == "recommendation-model"
    for field in ("creationTimestamp", "managedFields", "resourceVersion", "uid", "generation"):
        deployment["metadata"].pop(field, None)
    deployment.pop("status", None)
    validate_k8s(deployment)


def test_latest_image_is_denied_with_a_reason(admission_plane: ControlPlane) -> None:
    result = apply(admission_plane, manifest_in(BAD, ENABLED))
    assert result.returncode != 0
    assert 'admission webhook "validate.mlgate.io" denied the request' in result.stderr
    assert "latest" in result.stderr


@pytest.mark.parametrize(
    "namespace",
    [NOT_ENABLED, "kube-system"],
    ids=["namespace-not-opted-in", "kube-system-even-when-labelled"],
)
def test_namespaces_outside_the_selector_are_never_sent(
    admission_plane: ControlPlane, namespace: str
) -> None:
    if namespace == "kube-system":
        admission_plane.kubectl("label", "namespace", namespace, "mlgate.io/enabled=true")
    obj = manifest_in(BAD, namespace, name=f"unreviewed-{namespace}")
    result = apply(admission_plane, obj)
    assert result.returncode == 0, result.stderr
    assert "MODEL_NAME" not in container_env(stored(admission_plane, obj))
