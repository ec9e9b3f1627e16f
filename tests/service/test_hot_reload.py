"""Editing policy files under a running server changes decisions without a restart; a broken
edit does not, and is counted."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import urllib3

from policies.loader import default_policy_dir
from tests.harness import RunningServer, TlsFiles, load_review, run_server

HEADERS = {"Content-Type": "application/json"}
REVIEW = load_review("004-validate-create-deployment-image-analysis-model")  # :latest image

ALLOW_LATEST = """\
apiVersion: mlgate.io/v1alpha1
kind: Policy
metadata:
  name: image-policy
spec:
  validate:
    images:
      action: deny
      disallowLatest: false
"""
BROKEN = """\
apiVersion: mlgate.io/v1alpha1
kind: Policy
metadata:
  name: image-policy
spec:
  validate:
    images:
      action: forbid
"""


def _decide(pool: urllib3.HTTPSConnectionPool) -> tuple[bool, str]:
    response = pool.request("POST", "/validate", body=json.dumps(REVIEW).encode(), headers=HEADERS)
    answer = json.loads(response.data)["response"]
    return answer["allowed"], answer.get("status", {}).get("message", "")


def _wait_for(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _pool(server: RunningServer) -> urllib3.HTTPSConnectionPool:
    # A new connection per request so that both workers are asked (reuse_port spreads them).
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED",
        headers={"Connection": "close"},
    )  # fmt: skip


def _ready(pool: urllib3.HTTPSConnectionPool) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(pool.request("GET", "/readyz").data)
    return body


def _load_errors(pool: urllib3.HTTPSConnectionPool) -> float:
    for line in pool.request("GET", "/metrics").data.decode().splitlines():
        if line.startswith("mlgate_policy_load_errors_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_edit_changes_decisions_and_broken_edit_keeps_last_good_set(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(default_policy_dir(), policies)
    with run_server(tls=tls_files, workdir=tmp_path, policies=policies) as server:
        pool = _pool(server)
        allowed, message = _decide(pool)
        assert not allowed
        assert "images.no-latest" in message

        (policies / "10-images.yaml").write_text(ALLOW_LATEST)
        assert _wait_for(lambda: "images.no-latest" not in _decide(pool)[1]), server.log()[-2000:]
        assert all("images.no-latest" not in _decide(pool)[1] for _ in range(8))

        errors_before = _load_errors(pool)
        (policies / "10-images.yaml").write_text(BROKEN)
        assert _wait_for(lambda: _load_errors(pool) > errors_before), server.log()[-2000:]
        # The last good set (latest allowed) stays in force in every worker.
        assert all("images.no-latest" not in _decide(pool)[1] for _ in range(8))
        assert "10-images.yaml:8: spec.validate.images.action" in server.log()
        # Each worker polls the folder on its own: wait until one that has seen it answers.
        deadline = time.monotonic() + 10
        while "policy_error" not in (ready := _ready(pool)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready["status"] == "ready"
        assert "expected one of: deny, warn, audit" in ready["policy_error"]
        pool.close()


def test_configmap_symlink_swap_is_noticed(tls_files: TlsFiles, tmp_path: Path) -> None:
    """A mounted ConfigMap: files are symlinks into ..data, which is re-pointed atomically."""
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_11_28_10_00_00.000000001"
    shutil.copytree(default_policy_dir(), first)
    os.symlink(first.name, mount / "..data")
    for path in sorted(first.iterdir()):
        os.symlink(f"..data/{path.name}", mount / path.name)

    with run_server(tls=tls_files, workdir=tmp_path, policies=mount) as server:
        pool = _pool(server)
        assert "images.no-latest" in _decide(pool)[1]

        second = mount / "..2026_11_28_10_05_00.000000002"
        shutil.copytree(first, second)
        (second / "10-images.yaml").write_text(ALLOW_LATEST)
        os.symlink(second.name, mount / "..data_tmp")
        os.replace(mount / "..data_tmp", mount / "..data")
        shutil.rmtree(first)

        assert _wait_for(lambda: "images.no-latest" not in _decide(pool)[1]), server.log()[-2000:]
        pool.close()
