"""Check objects against the official Kubernetes OpenAPI schema (the kubernetes-validate package).

Custom resources have no schema there: an Argo ``Rollout`` is checked through its pod template,
validated as the ``template`` of a core ``v1 PodTemplate`` (a ``PodTemplateSpec``).
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from kubernetes_validate.utils import latest_version

# The newest schema the package ships (1.35 at least); strict: unknown fields are errors.
SCHEMA_VERSION = latest_version()
CUSTOM_RESOURCE_TEMPLATES = {("argoproj.io/v1alpha1", "Rollout"): ("spec", "template")}


def validate_k8s(obj: dict[str, Any]) -> None:
    """Raise ``kubernetes_validate.ValidationError`` if ``obj`` breaks the official schema."""
    template_path = CUSTOM_RESOURCE_TEMPLATES.get(
        (str(obj.get("apiVersion")), str(obj.get("kind")))
    )
    if template_path is not None:
        template: Any = obj
        for key in template_path:
            template = template[key]
        obj = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": obj.get("metadata", {}).get("name", "rollout")},
            "template": template,
        }
    kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
