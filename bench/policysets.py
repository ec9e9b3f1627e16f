"""Policy folders of a given size, for latency against the number of loaded policies.

Policy 1 does what the default policies do to the benchmark bodies, in one policy: the model
defaults (mutate), the image policy and the model-validation labels (validate). Policies 2..N
stand for other teams' policies, with the same content: half are limited to their team's
namespaces (``team-NNN-*``), half select workloads by a ``team`` label; none applies to the
benchmark bodies. So the work done per request stays that of one policy, and what grows is what
every request pays for each loaded policy: matching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from policies.loader import default_policy_dir

SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease", "mlgate-system"]


def _spec_of(file_name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((default_policy_dir() / file_name).read_text())
    spec: dict[str, Any] = document["spec"]
    return spec


def base_policy_spec() -> dict[str, Any]:
    """Mutate like ``model-defaults``; validate like ``image-policy`` and the labels gate."""
    labels = _spec_of("20-model-validation-production.yaml")["validate"]["labels"]
    return {
        "match": {"namespaces": {"include": ["*"], "exclude": SYSTEM_NAMESPACES}},
        "mutate": _spec_of("00-model-defaults.yaml")["mutate"],
        "validate": {
            "images": _spec_of("10-images.yaml")["validate"]["images"],
            "labels": {**labels, "action": "warn"},
        },
    }


def write_policy_folder(directory: Path, count: int) -> Path:
    """``count`` policies, one file each, in ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    base = base_policy_spec()
    for index in range(1, count + 1):
        spec = dict(base)
        if index > 1:
            team = f"team-{index:03d}"
            if index % 2:
                spec["match"] = {"namespaces": {"include": [f"{team}-*"]}}
            else:
                spec["match"] = {
                    "namespaces": {"include": ["*"], "exclude": SYSTEM_NAMESPACES},
                    "selector": {"matchLabels": {"team": team}},
                }
        name = "model-serving" if index == 1 else f"team-{index:03d}-serving"
        document = {
            "apiVersion": "mlgate.io/v1alpha1",
            "kind": "Policy",
            "metadata": {"name": name},
            "spec": spec,
        }
        path = directory / f"{index:03d}-{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return directory
