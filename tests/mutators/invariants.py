"""What every mutated object must satisfy, whatever the input held."""

from __future__ import annotations

from collections import Counter
from typing import Any

from policies.podspec import find_pod_templates, iter_containers


def find_duplicates(obj: dict[str, Any]) -> list[str]:
    """Duplicated volume names, mount paths, env names and tolerations, as readable strings."""
    problems: list[str] = []
    for template in find_pod_templates(obj):
        spec = template.spec
        volumes = [v.get("name") for v in spec.get("volumes") or []]
        problems += [f"volume {name}" for name, n in Counter(volumes).items() if n > 1]
        tolerations = [repr(sorted(t.items())) for t in spec.get("tolerations") or []]
        problems += [f"toleration {t}" for t, n in Counter(tolerations).items() if n > 1]
        for _, container in iter_containers(spec):
            who = container.get("name")
            mounts = container.get("volumeMounts") or []
            paths = [m.get("mountPath", "").rstrip("/") for m in mounts]
            problems += [f"{who}: mount path {p}" for p, n in Counter(paths).items() if n > 1]
            names = [e.get("name") for e in container.get("env") or []]
            problems += [f"{who}: env {name}" for name, n in Counter(names).items() if n > 1]
    return problems
