"""Model config: ConfigMap volume and mount, Secret envFrom, MODEL_* and default env."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators.model_config import mutate_pod
from policies.model import EnvVar, ModelConfigSettings
from tests.mutators.workloads import (
    check_second_pass_changes_nothing,
    check_warnings,
    container,
    deployment,
    pod,
    read_path,
    run_mutator,
)

DEFAULTS = ModelConfigSettings()
OVERRIDE = replace(DEFAULTS, override=True)
CONFIG = {"mlgate.io/model-config": "fraud-config"}
CONFIG_VOLUME = {"name": "mlgate-model-config", "configMap": {"name": "fraud-config"}}
CONFIG_MOUNT = {"name": "mlgate-model-config", "mountPath": "/etc/mlgate/model", "readOnly": True}
CONFIG_PATH_ENV = {"name": "MODEL_CONFIG_PATH", "value": "/etc/mlgate/model"}
BATCH = {"name": "BATCH_SIZE", "value": "32"}

CASES: list[Any] = [
    pytest.param(
        pod(annotations=CONFIG),
        DEFAULTS,
        {
            "spec.volumes": [CONFIG_VOLUME],
            "spec.containers.0.volumeMounts": [CONFIG_MOUNT],
            "spec.containers.0.env": [CONFIG_PATH_ENV, BATCH],
        },
        [],
        id="config-annotation-mounts-configmap-read-only",
    ),
    pytest.param(
        deployment(template_annotations={"mlgate.io/model-secrets": "fraud-secrets"}),
        DEFAULTS,
        {
            "spec.template.spec.containers.0.envFrom": [{"secretRef": {"name": "fraud-secrets"}}],
            "spec.template.spec.volumes": None,
        },
        [],
        id="secrets-annotation-on-template-adds-env-from",
    ),
    pytest.param(
        pod(
            container(envFrom=[{"secretRef": {"name": "fraud-secrets"}}]),
            annotations={"mlgate.io/model-secrets": "fraud-secrets"},
        ),
        DEFAULTS,
        {"spec.containers.0.envFrom": [{"secretRef": {"name": "fraud-secrets"}}]},
        [],
        id="secret-already-in-env-from-not-repeated",
    ),
    pytest.param(
        pod(labels={"app": "fraud", "version": "2.0"}),
        DEFAULTS,
        {
            "spec.containers.0.env": [
                {"name": "MODEL_NAME", "value": "fraud"},
                {"name": "MODEL_VERSION", "value": "2.0"},
                BATCH,
            ]
        },
        [],
        id="name-and-version-from-labels",
    ),
    pytest.param(
        pod(labels={"app.kubernetes.io/name": "fraud", "app.kubernetes.io/version": "3"}),
        DEFAULTS,
        {"spec.containers.0.env.0": {"name": "MODEL_NAME", "value": "fraud"}},
        [],
        id="name-from-recommended-labels",
    ),
    pytest.param(
        pod(container(env=[{"name": "BATCH_SIZE", "value": "8"}])),
        DEFAULTS,
        {"spec.containers.0.env": [{"name": "BATCH_SIZE", "value": "8"}]},
        [],
        id="author-env-kept",
    ),
    pytest.param(
        pod(container(env=[{"name": "BATCH_SIZE", "value": "8"}])),
        OVERRIDE,
        {"spec.containers.0.env": [BATCH]},
        [],
        id="author-env-replaced-with-override",
    ),
    pytest.param(
        pod(container(env=[{"name": "BATCH_SIZE", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}])),
        DEFAULTS,
        {"spec.containers.0.env.0.valueFrom": {"fieldRef": {"fieldPath": "x"}}},
        [],
        id="author-env-from-field-ref-kept",
    ),
    pytest.param(
        pod(container(env=None)),
        DEFAULTS,
        {"spec.containers.0.env": [BATCH]},
        [],
        id="null-env-becomes-a-list",
    ),
    pytest.param(
        pod(container(env=[{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])),
        replace(OVERRIDE, default_env=(EnvVar("A", "1"), EnvVar("B", "9"), EnvVar("C", "3"))),
        {
            "spec.containers.0.env": [
                {"name": "B", "value": "9"},
                {"name": "C", "value": "3"},
                {"name": "A", "value": "1"},
            ]
        },
        [],
        id="override-replaces-in-place-and-appends-the-rest",
    ),
    pytest.param(
        pod(annotations={"mlgate.io/model-config": "Not_A_Name"}),
        DEFAULTS,
        {"spec.volumes": None, "spec.containers.0.env": [BATCH]},
        ["not a valid object name"],
        id="invalid-configmap-name-ignored-with-warning",
    ),
    pytest.param(
        pod(
            annotations=CONFIG,
            volumes=[{"name": "mlgate-model-config", "emptyDir": {}}],
        ),
        DEFAULTS,
        {
            "spec.volumes": [{"name": "mlgate-model-config", "emptyDir": {}}],
            "spec.containers.0.volumeMounts": None,
            "spec.containers.0.env": [BATCH],
        },
        ['volume "mlgate-model-config" already exists'],
        id="volume-name-taken-not-mounted-with-warning",
    ),
    pytest.param(
        pod(
            container(volumeMounts=[{"name": "own", "mountPath": "/etc/mlgate/model/"}]),
            annotations=CONFIG,
            volumes=[{"name": "own", "emptyDir": {}}],
        ),
        DEFAULTS,
        {"spec.containers.0.volumeMounts": [{"name": "own", "mountPath": "/etc/mlgate/model/"}]},
        ['already mounts "own"'],
        id="mount-path-taken-kept-with-warning",
    ),
    pytest.param(
        pod(
            container(volumeMounts=[{"name": "own", "mountPath": "/etc/mlgate/model"}]),
            annotations=CONFIG,
            volumes=[{"name": "own", "emptyDir": {}}],
        ),
        OVERRIDE,
        {"spec.containers.0.volumeMounts": [CONFIG_MOUNT]},
        [],
        id="mount-path-taken-replaced-with-override",
    ),
    pytest.param(
        pod(container("server"), container("sidecar"), initContainers=[container("init")]),
        replace(DEFAULTS, default_env=(EnvVar("A", "1"), EnvVar("B", "2"))),
        {
            "spec.containers.0.env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "spec.containers.1.env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "spec.initContainers.0.env": None,
        },
        [],
        id="every-app-container-but-not-init",
    ),
]


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_model_config_fills_in_what_is_missing(
    obj: dict[str, Any],
    settings: ModelConfigSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    mutated, result = run_mutator(mutate_pod, obj, settings)
    for path, value in expected.items():
        assert read_path(mutated, path) == value, path
    check_warnings(result, warnings)


@pytest.mark.parametrize(("obj", "settings", "expected", "warnings"), CASES)
def test_model_config_second_pass_changes_nothing(
    obj: dict[str, Any],
    settings: ModelConfigSettings,
    expected: dict[str, Any],
    warnings: list[str],
) -> None:
    del expected, warnings
    check_second_pass_changes_nothing(mutate_pod, obj, settings)
