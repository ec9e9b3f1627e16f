"""Certificate self-management against a real kube-apiserver: racing replicas agree.

Several managers start at the same instant on one empty Secret (as the replicas of a fresh
install do); every write carries the resourceVersion it read, so exactly one CA must win, and
every replica must end up serving it. The same holds when they all find the CA due for rotation
at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certs.authority import build_ca
from certs.cluster import KubeCertificateStore
from certs.files import read_certificate_files
from certs.manager import (
    ACKS_ANNOTATION,
    CertificateManager,
    CertificateState,
    ManagerSettings,
    fingerprint_bundle,
    fingerprint_pem,
)
from tests.e2e.controlplane import ControlPlane
from tests.e2e.webhooks import local_webhook_configurations
from tests.harness import ROOT

NAMESPACE = "mlgate-race"
REPLICAS = 4
DAY = dt.timedelta(days=1)
SETTINGS = ManagerSettings(
    service="mlgate",
    namespace=NAMESPACE,
    ca_valid_for=365 * DAY,
    leaf_valid_for=90 * DAY,
    min_overlap=dt.timedelta(minutes=2),
    ack_ttl=dt.timedelta(minutes=5),
)


@pytest.fixture(scope="module")
def race_plane(control_plane: ControlPlane) -> ControlPlane:
    control_plane.create_namespace(NAMESPACE)
    # Configurations to publish to, with a selector that sends nothing anywhere.
    for configuration in local_webhook_configurations(
        url="https://127.0.0.1:9", ca_pem=None, name="mlgate-race"
    ):
        for webhook in configuration["webhooks"]:
            webhook["namespaceSelector"] = {"matchLabels": {"mlgate.io/race-never": "true"}}
        control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(configuration))
    return control_plane


def race(
    plane: ControlPlane, tmp: Path, *, secret: str, clock: Callable[[], dt.datetime]
) -> list[CertificateState]:
    """Run ``REPLICAS`` managers' first reconcile at the same instant; return what each serves."""
    barrier = threading.Barrier(REPLICAS)
    results: list[CertificateState | BaseException] = [RuntimeError("not run")] * REPLICAS

    def replica(index: int) -> None:
        manager = CertificateManager(
            settings=SETTINGS,
            store=KubeCertificateStore(
                api_client=plane.api_client(),
                namespace=NAMESPACE,
                secret_name=secret,
                mutating_name="mlgate-race",
                validating_name="mlgate-race",
            ),
            directory=tmp / f"replica-{index}",
            replica=f"replica-{index}",
            clock=clock,
        )
        barrier.wait()
        try:
            results[index] = manager.reconcile_once()
        except BaseException as error:
            results[index] = error

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(REPLICAS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    states = [r for r in results if isinstance(r, CertificateState)]
    assert len(states) == REPLICAS, results
    return states


def read_object(plane: ControlPlane, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(plane.kubectl("get", *args, "-o", "json").stdout)
    return found


def published_bundles(plane: ControlPlane) -> set[frozenset[str]]:
    return {
        fingerprint_bundle(base64.b64decode(webhook["clientConfig"].get("caBundle", "")))
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration")
        for webhook in read_object(plane, kind, "mlgate-race")["webhooks"]
    }


def test_racing_replicas_on_an_empty_secret_end_with_one_ca(
    race_plane: ControlPlane, tmp_path: Path
) -> None:
    states = race(race_plane, tmp_path, secret="certs-fresh", clock=lambda: dt.datetime.now(dt.UTC))
    cas = {fingerprint_pem(s.ca.cert_pem) for s in states}
    leaves = {fingerprint_pem(s.serving.cert_pem) for s in states}
    assert len(cas) == 1
    assert len(leaves) == 1
    for index in range(REPLICAS):
        files = read_certificate_files(tmp_path / f"replica-{index}")
        assert files == states[0].files
    assert published_bundles(race_plane) == {frozenset(cas)}
    secret = read_object(race_plane, "secret", "certs-fresh", "-n", NAMESPACE)
    assert fingerprint_bundle(base64.b64decode(secret["data"]["ca.crt"])) == frozenset(cas)
    reports = json.loads(secret["metadata"]["annotations"][ACKS_ANNOTATION])
    assert sorted(reports) == [f"replica-{i}" for i in range(REPLICAS)]
    assert {r["leaf"] for r in reports.values()} == leaves


def test_racing_replicas_rotating_a_due_ca_add_exactly_one_new_ca(
    race_plane: ControlPlane, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    first = race(race_plane, tmp_path, secret="certs-rotate", clock=lambda: now)
    old_ca = fingerprint_pem(first[0].ca.cert_pem)
    later = now + 250 * DAY
    states = race(race_plane, tmp_path, secret="certs-rotate", clock=lambda: later)
    bundles = {fingerprint_bundle(s.bundle_pem) for s in states}
    assert len(bundles) == 1
    (bundle,) = bundles
    assert len(bundle) == 2
    assert old_ca in bundle
    new_ca = {fingerprint_pem(s.ca.cert_pem) for s in states}
    assert len(new_ca) == 1
    assert new_ca != {old_ca}
    assert published_bundles(race_plane) == {bundle}


def test_certs_inject_sets_the_bundle_on_every_webhook(
    race_plane: ControlPlane, tmp_path: Path
) -> None:
    bundle = build_ca(common_name="injected").cert_pem + build_ca(common_name="second").cert_pem
    (tmp_path / "ca.crt").write_bytes(bundle)
    result = subprocess.run(
        [
            sys.executable, "-m", "webhook.cli", "certs", "inject",
            "--ca", str(tmp_path / "ca.crt"),
            "--kubeconfig", str(race_plane.kubeconfig),
            "--mutating-name", "mlgate-race", "--validating-name", "mlgate-race",
        ],
        check=False, capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "MutatingWebhookConfiguration/mlgate-race: caBundle set" in result.stdout
    assert published_bundles(race_plane) == {fingerprint_bundle(bundle)}
