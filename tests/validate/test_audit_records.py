"""The audit records of a decision name the images of the workload the request is about."""

from __future__ import annotations

from typing import Any

import pytest

from policies.context import AdmissionContext
from policies.engine import summarize
from policies.results import CheckResult
from policies.workload import Workload
from tests import contexts
from webhook.admission import build_audit_records


def deployment(*images: object) -> dict[str, Any]:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return {
        "kind": "Deployment",
        "metadata": {"name": "model"},
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [{"name": "init", "image": "fetch:1"}],
                    "containers": containers,
                }
            }
        },
    }


DENIED = summarize([CheckResult("p", "images.no-latest", "fail", "uses :latest")])


def make_ctx(**overrides: Any) -> AdmissionContext:
    """A Deployment with repeated and missing images (``contexts.make_ctx`` otherwise)."""
    return contexts.make_ctx(
        **{"obj": deployment("model:1", "proxy:2", "model:1", None), **overrides}
    )


SCALE = {"kind": "Scale", "spec": {"replicas": 3}}


@pytest.mark.parametrize(
    ("ctx", "images"),
    [
        pytest.param(make_ctx(), ("fetch:1", "model:1", "proxy:2"), id="each-string-image-once"),
        pytest.param(
            make_ctx(kind="Scale", sub_resource="scale", obj=SCALE, scale_target=deployment("s:3")),
            ("fetch:1", "s:3"),
            id="scale-names-the-scaled-workload",
        ),
        pytest.param(
            make_ctx(kind="Scale", sub_resource="scale", obj=SCALE, scale_target=None),
            (),
            id="scale-without-its-workload",
        ),
    ],
)
@pytest.mark.parametrize("shared", [False, True], ids=["own-workload", "checks-workload"])
def test_records_name_the_images_of_the_subject(
    ctx: AdmissionContext, images: tuple[str, ...], shared: bool
) -> None:
    assert ctx.obj is not None
    workload = Workload.of(ctx.obj, namespace=ctx.namespace) if shared else None
    records = build_audit_records(ctx, DENIED, workload=workload)
    assert [r.images for r in records] == [images]
