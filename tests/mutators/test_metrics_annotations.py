"""Prometheus scrape annotations on the pod (template), with the port chosen by name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mutators.metrics_annotations import mutate_pod
from policies.model import MetricsAnnotationsSettings
from tests.mutators.workloads import (
    check_second_pass_changes_nothing,
    container,
    deployment,
    pod,
    read_path,
    run_mutator,
)

DEFAULTS = MetricsAnnotationsSettings()


def scrape(port: str, path: str = "/metrics") -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": path}


def ports(*entries: tuple[str | None, int]) -> list[dict[str, Any]]:
    return [
        {"containerPort": number, **({"name": name} if name else {})} for name, number in entries
    ]


CASES: list[Any] = [
    pytest.param(pod(), DEFAULTS, "metadata.annotations", scrape("8080"), id="default-port"),
    pytest.param(
        pod(container(ports=ports(("grpc", 50051), ("http", 8000), ("metrics", 9100)))),
        DEFAULTS,
        "metadata.annotations",
        scrape("9100"),
        id="port-named-metrics-first",
    ),
    pytest.param(
        pod(
            container("a", ports=ports(("grpc", 50051))),
            container("b", ports=ports(("http", 8000))),
        ),
        DEFAULTS,
        "metadata.annotations",
        scrape("8000"),
        id="port-named-http-in-any-container",
    ),
    pytest.param(
        pod(container(ports=ports((None, 7000), ("grpc", 50051)))),
        DEFAULTS,
        "metadata.annotations",
        scrape("7000"),
        id="first-port-when-none-named",
    ),
    pytest.param(
        pod(
            container(ports=ports(("metrics", 9100))),
            annotations={"prometheus.io/port": "9999", "team": "ml"},
        ),
        DEFAULTS,
        "metadata.annotations",
        {"prometheus.io/port": "9999", "team": "ml", **scrape("9999")},
        id="author-annotation-kept",
    ),
    pytest.param(
        pod(
            container(ports=ports(("metrics", 9100))),
            annotations={"prometheus.io/port": "9999"},
        ),
        replace(DEFAULTS, override=True, path="/stats"),
        "metadata.annotations",
        scrape("9100", "/stats"),
        id="author-annotation-replaced-with-override",
    ),
    pytest.param(
        deployment(with_template_metadata=False),
        DEFAULTS,
        "spec.template.metadata.annotations",
        scrape("8080"),
        id="template-without-metadata-gets-some",
    ),
]


@pytest.mark.parametrize(("obj", "settings", "path", "expected"), CASES)
def test_pod_gets_scrape_annotations(
    obj: dict[str, Any], settings: MetricsAnnotationsSettings, path: str, expected: dict[str, str]
) -> None:
    mutated, result = run_mutator(mutate_pod, obj, settings)
    assert read_path(mutated, path) == expected
    assert result.warnings == ()


@pytest.mark.parametrize(("obj", "settings", "path", "expected"), CASES)
def test_metrics_annotations_second_pass_changes_nothing(
    obj: dict[str, Any], settings: MetricsAnnotationsSettings, path: str, expected: dict[str, str]
) -> None:
    del path, expected
    check_second_pass_changes_nothing(mutate_pod, obj, settings)
