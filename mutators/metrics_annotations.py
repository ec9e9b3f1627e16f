"""Prometheus scrape annotations on the pod (template), only where absent.

``prometheus.io/port`` is the app container port named like the policy's first port name
(``metrics``), else its second (``http``)..., else the first container port declared, else the
policy's default port.
"""

from __future__ import annotations

from typing import Any

from mutators.fields import fill_key
from mutators.result import MutatorResult
from policies.model import MetricsAnnotationsSettings
from policies.podspec import PodTemplate, app_containers, ensure_metadata

JsonObject = dict[str, Any]


def mutate_pod(
    template: PodTemplate, *, obj: JsonObject, settings: MetricsAnnotationsSettings
) -> MutatorResult:
    """Add the scrape annotations to the metadata of the pod (template) of ``template``."""
    wanted = (
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", str(find_metrics_port(template.spec, settings=settings))),
        ("prometheus.io/path", settings.path),
    )
    metadata = template.metadata
    # NOTE: the annotations read once and filled in by key, rather than fill_field walking
    # down from the metadata for each of the three; attached only once one is written.
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    changed = False
    for key, value in wanted:
        fill = fill_key(annotations, key, value, override=settings.override)
        changed |= fill in ("added", "replaced")
    if changed:
        if metadata.get("annotations") is not annotations:
            metadata["annotations"] = annotations
        ensure_metadata(obj, template)  # a template without metadata got a fresh dict
    return MutatorResult(changed=changed)


def find_metrics_port(spec: JsonObject, *, settings: MetricsAnnotationsSettings) -> int:
    """The port Prometheus should scrape on a pod with this spec."""
    ports = []
    for container in app_containers(spec):
        declared = container.get("ports")
        if isinstance(declared, list):
            for port in declared:
                if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
                    ports.append(port)
    for name in settings.port_names:
        for port in ports:
            if port.get("name") == name:
                return int(port["containerPort"])
    if ports:
        return int(ports[0]["containerPort"])
    return settings.default_port
