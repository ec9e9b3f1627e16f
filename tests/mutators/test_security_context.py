"""Non-root security context, writable emptyDirs, and explicit conflicting values left alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators.security_context import mutate_pod, writable_volume_name
from policies.model import SecurityContextSettings
from tests.mutators.workloads import (
    check_second_pass_changes_nothing,
    check_warnings,
    container,
    pod,
    read_path,
    run_mutator,
)

DEFAULTS = SecurityContextSettings()
OVERRIDE = replace(DEFAULTS, override=True)
POD_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "fsGroup": 2000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_CONTEXT = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
TMP_VOLUME = {"name": "mlgate-writable-tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "mlgate-writable-tmp", "mountPath": "/tmp"}


def with_context(**context: Any) -> dict[str, Any]:
    return container(securityContext=context)


CASES: list[Any] = [
    pytest.param(
        pod(initContainers=[container("init")]),
        DEFAULTS,
        {
            "spec.securityContext": POD_CONTEXT,
            "spec.containers.0.securityContext": CONTAINER_CONTEXT,
            "spec.initContainers.0.securityContext": CONTAINER_CONTEXT,
            "spec.volumes": [TMP_VOLUME],
            "spec.containers.0.volumeMounts": [TMP_MOUNT],
            "spec.initContainers.0.volumeMounts": [TMP_MOUNT],
        },
        [],
        id="bare-pod-hardened-with-tmp-emptydir",
    ),
    pytest.param(
        pod(
            container(volumeMounts=[{"name": "scratch", "mountPath": "/tmp/"}]),
            volumes=[{"name": "scratch", "emptyDir": {}}],
        ),
        DEFAULTS,
        {
            "spec.volumes": [{"name": "scratch", "emptyDir": {}}],
            "spec.containers.0.volumeMounts": [{"name": "scratch", "mountPath": "/tmp/"}],
        },
        [],
        id="something-mounted-at-tmp-gets-no-emptydir",
    ),
    pytest.param(
        pod(with_context(runAsUser=0)),
        DEFAULTS,
        {
            "spec.securityContext": {
                "runAsUser": 1000,
                "fsGroup": 2000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "spec.containers.0.securityContext.runAsUser": 0,
        },
        ['container "server": runAsUser: 0 (root) left alone; runAsNonRoot not set on the pod'],
        id="root-container-left-alone-and-pod-not-made-non-root",
    ),
    pytest.param(
        pod(securityContext={"runAsUser": 0}),
        DEFAULTS,
        {"spec.securityContext.runAsUser": 0, "spec.securityContext.runAsNonRoot": None},
        ["pod securityContext.runAsUser: 0 (root) left alone; runAsNonRoot not set on the pod"],
        id="root-pod-left-alone-with-warning",
    ),
    pytest.param(
        pod(securityContext={"runAsUser": 0, "runAsNonRoot": False}),
        OVERRIDE,
        {"spec.securityContext": POD_CONTEXT},
        [],
        id="override-replaces-root-pod-values",
    ),
    pytest.param(
        pod(with_context(privileged=True)),
        DEFAULTS,
        {
            "spec.containers.0.securityContext": {
                "privileged": True,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
        },
        ["privileged: true; allowPrivilegeEscalation not set"],
        id="privileged-container-gets-no-allow-privilege-escalation",
    ),
    pytest.param(
        pod(with_context(capabilities={"add": ["SYS_ADMIN"]})),
        DEFAULTS,
        {
            "spec.containers.0.securityContext": {
                "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
            }
        },
        ["capability SYS_ADMIN added; allowPrivilegeEscalation not set"],
        id="sys-admin-container-gets-no-allow-privilege-escalation",
    ),
    pytest.param(
        pod(with_context(readOnlyRootFilesystem=False, allowPrivilegeEscalation=True)),
        DEFAULTS,
        {
            "spec.containers.0.securityContext.readOnlyRootFilesystem": False,
            "spec.containers.0.securityContext.allowPrivilegeEscalation": True,
            "spec.volumes": None,
        },
        ["allowPrivilegeEscalation: true left alone", "readOnlyRootFilesystem: false left alone"],
        id="writable-root-kept-with-warning-and-no-emptydir",
    ),
    pytest.param(
        pod(with_context(capabilities={"drop": ["NET_RAW"]})),
        DEFAULTS,
        {"spec.containers.0.securityContext.capabilities.drop": ["NET_RAW"]},
        [],
        id="author-drop-list-kept",
    ),
    pytest.param(
        pod(with_context(capabilities={"drop": ["NET_RAW"]})),
        OVERRIDE,
        {"spec.containers.0.securityContext.capabilities.drop": ["NET_RAW", "ALL"]},
        [],
        id="author-drop-list-extended-with-override",
    ),
    pytest.param(
        pod(securityContext={"seccompProfile": {"type": "Unconfined"}}),
        DEFAULTS,
        {"spec.securityContext.seccompProfile": {"type": "Unconfined"}},
        ["pod seccompProfile Unconfined left alone"],
        id="unconfined-seccomp-kept-with-warning",
    ),
    pytest.param(
        pod(volumes=[{"name": "mlgate-writable-tmp", "configMap": {"name": "x"}}]),
        DEFAULTS,
        {
            "spec.volumes": [{"name": "mlgate-writable-tmp", "configMap": {"name": "x"}}],
            "spec.containers.0.volumeMounts": None,
        },
        ['volume "mlgate-writable-tmp" exists and is not an emptyDir'],
        id="emptydir-name-taken-not-mounted-with-warning",
    ),
    pytest.param(
        pod(),
        replace(DEFAULTS, writable_paths=("/tmp", "/var/cache/models/"), run_as_group=3000),
        {
            "spec.securityContext.runAsGroup": 3000,
            "spec.volumes": [
                TMP_VOLUME,
                {"name": "mlgate-writable-var-cache-models", "emptyDir": {}},
            ],
            "spec.containers.0.volumeMounts": [
                TMP_MOUNT,
                {"name": "mlgate-writable-var-cache-models", "mountPath": "/var/cache/models/"},
            ],
        },
        [],
        id="extra-writable-paths-and-run-as-group",
    ),
    pytest.param(
        pod(os={"name": "windows"}),
        DEFAULTS,
        {"spec.securityContext": None, "spec.containers.0.securityContext": None},
        [],
        id="windows-pod-left-alone",
    ),
]


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_security_context_hardens_pod(
    obj: dict[str, Any],
    settings: SecurityContextSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    mutated, result = run_mutator(mutate_pod, obj, settings)
    for path, value in expected.items():
        assert read_path(mutated, path) == value, path
    check_warnings(result, warnings)


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_security_context_second_pass_changes_nothing(
    obj: dict[str, Any],
    settings: SecurityContextSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    del expected, warnings
    check_second_pass_changes_nothing(mutate_pod, obj, settings)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/tmp", "mlgate-writable-tmp"),
        ("/var/cache/Models/", "mlgate-writable-var-cache-models"),
        ("/", None),
        ("/" + "x" * 80, "mlgate-writable-" + "x" * 47),
    ],
    ids=["tmp", "nested-mixed-case", "root-has-no-name", "long-path-truncated-to-dns-label"],
)
def test_writable_volume_name_is_a_dns_label(path: str, name: str | None) -> None:
    assert writable_volume_name(path) == name
