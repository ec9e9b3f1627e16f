"""A cluster made of local files: ``ClusterLookups`` for ``mlgate policy test``.

What the live view (``webhook.kube``) reads from the API server is given on the command line
instead: the labels of namespaces (``--namespace-labels``) and ResourceQuota objects with their
``status.used`` (``--resource-quota FILE``). Every namespace exists; one given no labels has
only the ``kubernetes.io/metadata.name`` label the API server sets on every namespace, and a
namespace with no ResourceQuota in the files has none. Workloads behind ``scale`` requests are
not offered: ``policy test`` only sends CREATE requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.context import LookupFailure, QuotaStatus
from webhook.policytest.manifests import Manifest, ManifestError

NAME_LABEL = "kubernetes.io/metadata.name"


class NamespaceLabelsError(ValueError):
    """A ``--namespace-labels`` value is not ``NAMESPACE=KEY=VALUE[,KEY=VALUE...]``."""


@dataclass(frozen=True)
class OfflineCluster:
    """``webhook.admission.ClusterLookups`` answered from local data."""

    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    quotas: Mapping[str, tuple[QuotaStatus, ...]] = field(default_factory=dict)

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        return {**self.labels.get(namespace, {}), NAME_LABEL: namespace}

    def resource_quotas(self, namespace: str) -> tuple[QuotaStatus, ...] | LookupFailure:
        return self.quotas.get(namespace, ())

    def workload(
        self, *, group: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | LookupFailure:
        return LookupFailure(
            what=f"{resource} {namespace}/{name}",
            reason="mlgate policy test reads no workloads (it sends no scale requests)",
        )


def parse_namespace_labels(values: Iterable[str]) -> dict[str, dict[str, str]]:
    """``["ml-prod=tier=gold,team=ml"]`` -> ``{"ml-prod": {"tier": "gold", "team": "ml"}}``.

    A namespace may be given several times; its labels add up. ``NAMESPACE=`` alone gives a
    namespace with no labels of its own.
    """
    out: dict[str, dict[str, str]] = {}
    for value in values:
        namespace, sep, rest = value.partition("=")
        if not sep or not namespace:
            raise NamespaceLabelsError(
                f"--namespace-labels {value!r}: expected NAMESPACE=KEY=VALUE[,KEY=VALUE...]"
            )
        labels = out.setdefault(namespace, {})
        for pair in filter(None, rest.split(",")):
            key, sep, label = pair.partition("=")
            if not sep or not key:
                raise NamespaceLabelsError(
                    f"--namespace-labels {value!r}: {pair!r} is not KEY=VALUE"
                )
            labels[key] = label
    return out


def collect_quotas(
    manifests: Iterable[Manifest], *, default_namespace: str
) -> tuple[dict[str, tuple[QuotaStatus, ...]], list[ManifestError]]:
    """The ResourceQuotas of ``manifests`` by namespace; any other kind is an error."""
    quotas: dict[str, list[QuotaStatus]] = {}
    errors: list[ManifestError] = []
    for manifest in manifests:
        if manifest.kind.kind != "ResourceQuota":
            errors.append(
                ManifestError(
                    manifest.location,
                    f"expected a ResourceQuota, got a {manifest.kind.kind}",
                )
            )
            continue
        for part in ("spec", "status"):
            hard_or_used = manifest.obj.get(part)
            if hard_or_used is not None and not isinstance(hard_or_used, dict):
                errors.append(ManifestError(manifest.location, f"{part} is not a mapping"))
                break
        else:
            namespace = manifest.namespace or default_namespace
            quotas.setdefault(namespace, []).append(QuotaStatus.from_object(manifest.obj))
    return {ns: tuple(qs) for ns, qs in quotas.items()}, errors
