"""The webhook configurations of ``manifests/``, pointed at a local server by URL."""

from __future__ import annotations

import base64
import copy
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def rendered_webhook_configurations() -> list[dict[str, Any]]:
    """Both configurations exactly as ``kubectl kustomize manifests/`` renders them."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] in WEBHOOK_KINDS]


def local_webhook_configurations(
    *, url: str, ca_pem: bytes | None, name: str = "mlgate"
) -> list[dict[str, Any]]:
    """The rendered configurations, renamed, calling ``url`` + the manifests' path."""
    configurations = []
    for rendered in rendered_webhook_configurations():
        configuration = copy.deepcopy(rendered)
        configuration["metadata"] = {"name": name}
        for webhook in configuration["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"{url}{path}"}
            if ca_pem is not None:
                webhook["clientConfig"]["caBundle"] = base64.b64encode(ca_pem).decode()
        configurations.append(configuration)
    return configurations
