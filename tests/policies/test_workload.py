"""The facts the checks read about an object: containers with their paths, merged labels."""

from __future__ import annotations

import pytest

from policies.podspec import find_pod_templates
from policies.workload import Workload, format_path, template_containers


def test_template_containers_list_init_app_and_ephemeral_with_paths() -> None:
    pod = {
        "kind": "Pod",
        "spec": {
            "containers": [{"name": "server"}, "not a container", {"name": "sidecar"}],
            "initContainers": [{"name": "fetch"}],
            "ephemeralContainers": [{"name": "debug"}],
        },
    }
    refs = template_containers(find_pod_templates(pod)[0])
    assert [(r.list_name, r.position, r.name) for r in refs] == [
        ("initContainers", 0, "fetch"),
        ("containers", 0, "server"),
        ("containers", 2, "sidecar"),
        ("ephemeralContainers", 0, "debug"),
    ]
    assert [format_path(r.path) for r in refs] == [
        "spec.initContainers[0]",
        "spec.containers[0]",
        "spec.containers[2]",
        "spec.ephemeralContainers[0]",
    ]


@pytest.mark.parametrize(
    ("obj", "labels"),
    [
        pytest.param(
            {"kind": "Pod", "metadata": {"labels": {"app": "a", "n": 1}}, "spec": {}},
            {"app": "a"},
            id="pod-own-labels-strings-only",
        ),
        pytest.param(
            {
                "kind": "Deployment",
                "metadata": {"labels": {"app": "object"}},
                "spec": {
                    "template": {
                        "metadata": {"labels": {"app": "template", "version": "v1"}},
                        "spec": {},
                    }
                },
            },
            {"app": "object", "version": "v1"},
            id="deployment-object-labels-win-over-template",
        ),
        pytest.param(
            {"kind": "Deployment", "spec": {"template": {"spec": {}}}},
            {},
            id="deployment-without-metadata",
        ),
    ],
)
def test_workload_labels_fall_back_on_the_pod_template(
    obj: dict[str, object], labels: dict[str, str]
) -> None:
    assert Workload.of(obj, namespace="ns").labels == labels


def test_format_path_words_indexes_in_brackets() -> None:
    assert format_path(("spec", "template", "spec", "containers", 3, "image")) == (
        "spec.template.spec.containers[3].image"
    )
