"""The working copy: every mutator writes only into it, and the patch still gives the result.

A write into a subtree the copy shares with the input would change the input and be missing
from the patch; these tests run every mutator, alone and together, with and without
``override``, on every object the fixtures and golden cases hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpatch
import orjson
import pytest
import yaml

from mutators import apply_all, make_patch
from mutators.working_copy import make_working_copy
from policies.model import (
    GpuSchedulingSettings,
    MetricsAnnotationsSettings,
    ModelConfigSettings,
    MutateSpec,
    Policy,
    ResourceDefaultsSettings,
    SecurityContextSettings,
)
from policies.podspec import find_pod_templates

TESTS = Path(__file__).resolve().parent.parent
REVIEWS = sorted((TESTS / "fixtures" / "admission-reviews").glob("*.json"))
GOLDEN_INPUTS = sorted((TESTS / "golden" / "mutate").glob("*/input.yaml"))


def every_object() -> list[Any]:
    objects = []
    for path in REVIEWS:
        request = orjson.loads(path.read_bytes())["request"]
        objects += [
            pytest.param(request[key], id=f"{path.stem}-{key}")
            for key in ("object", "oldObject")
            if isinstance(request.get(key), dict)
        ]
    for path in GOLDEN_INPUTS:
        objects.append(pytest.param(yaml.safe_load(path.read_text()), id=path.parent.name))
    return objects


def policy(name: str, *, override: bool, **enabled: bool) -> Policy:
    gpu = GpuSchedulingSettings(override=override, runtime_class_name="nvidia")
    return Policy(
        name=name,
        mutate=MutateSpec(
            model_config=ModelConfigSettings(override=override) if enabled.get("model") else None,
            resource_defaults=(
                ResourceDefaultsSettings(override=override) if enabled.get("resources") else None
            ),
            gpu_scheduling=gpu if enabled.get("gpu") else None,
            security_context=(
                SecurityContextSettings(override=override) if enabled.get("security") else None
            ),
            metrics_annotations=(
                MetricsAnnotationsSettings(override=override) if enabled.get("metrics") else None
            ),
        ),
    )


MUTATOR_SWITCHES = ("model", "resources", "gpu", "security", "metrics")
POLICY_SETS = [
    *(
        pytest.param([policy(name, override=override, **{name: True})], id=f"{name}-{override}")
        for name in MUTATOR_SWITCHES
        for override in (False, True)
    ),
    pytest.param(
        [
            policy("all", override=False, **dict.fromkeys(MUTATOR_SWITCHES, True)),
            policy("all-override", override=True, **dict.fromkeys(MUTATOR_SWITCHES, True)),
        ],
        id="all-then-all-override",
    ),
]


@pytest.mark.parametrize("policies", POLICY_SETS)
@pytest.mark.parametrize("obj", every_object())
def test_mutators_leave_the_input_alone_and_the_patch_gives_the_result(
    obj: dict[str, Any], policies: list[Policy]
) -> None:
    snapshot = orjson.dumps(obj)
    outcome = apply_all(obj, policies)
    assert orjson.dumps(obj) == snapshot
    patch = make_patch(obj, outcome.obj)
    assert jsonpatch.apply_patch(obj, patch) == outcome.obj
    assert bool(patch) == outcome.changed


def test_working_copy_shares_what_no_mutator_writes() -> None:
    obj = orjson.loads(REVIEWS[0].read_bytes())["request"]["object"]
    working, templates = make_working_copy(obj, find_pod_templates(obj))
    assert working == obj
    assert working["metadata"]["managedFields"] is obj["metadata"]["managedFields"]
    assert working["spec"]["selector"] is obj["spec"]["selector"]
    assert working["metadata"]["annotations"] is not obj["metadata"]["annotations"]
    container = obj["spec"]["template"]["spec"]["containers"][0]
    copied = templates[0].spec["containers"][0]
    assert copied is working["spec"]["template"]["spec"]["containers"][0]
    assert copied is not container
    assert copied["ports"] is container["ports"]
    assert copied["env"] is not container["env"]
    assert copied["env"][0] is container["env"][0]
