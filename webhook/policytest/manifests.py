"""Kubernetes manifests read the way ``kubectl apply -f`` reads them.

Files, folders (recursively: ``.yaml``, ``.yml`` and ``.json`` files, sorted by path) or ``-``
for stdin; multi-document YAML, JSON, and ``kind: List`` (or any ``...List`` with ``items``).
A document that cannot be used is a ``ManifestError`` naming the file, the document and the
reason; the other documents of the file are still read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from policies.podspec import POD_BEARING_KINDS, find_pod_templates, template_path

JsonObject = dict[str, Any]

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"
_SEPARATOR = re.compile(r"^---\s*(#.*)?$")


@dataclass(frozen=True)
class KindInfo:
    """Where the API server serves a kind: what goes in ``request.kind`` and ``.resource``."""

    kind: str
    group: str
    version: str
    resource: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def pod_bearing(self) -> bool:
        """Whether mlgate's webhooks are registered for this kind (they cover exactly these)."""
        return self.kind in POD_BEARING_KINDS


def _kinds(*rows: tuple[str, str, str, bool]) -> dict[str, KindInfo]:
    table = {}
    for kind, api_version, resource, namespaced in rows:
        group, _, version = api_version.rpartition("/")
        table[kind] = KindInfo(kind, group, version, resource, namespaced)
    return table


# The kinds a manifest folder usually holds. The pod-bearing ones are those the webhooks see;
# the others are read (so a whole folder can be tested) and never sent to mlgate.
KINDS = _kinds(
    ("Pod", "v1", "pods", True),
    ("Deployment", "apps/v1", "deployments", True),
    ("StatefulSet", "apps/v1", "statefulsets", True),
    ("ReplicaSet", "apps/v1", "replicasets", True),
    ("DaemonSet", "apps/v1", "daemonsets", True),
    ("Job", "batch/v1", "jobs", True),
    ("CronJob", "batch/v1", "cronjobs", True),
    ("Rollout", "argoproj.io/v1alpha1", "rollouts", True),
    ("ConfigMap", "v1", "configmaps", True),
    ("Secret", "v1", "secrets", True),
    ("Service", "v1", "services", True),
    ("ServiceAccount", "v1", "serviceaccounts", True),
    ("PersistentVolumeClaim", "v1", "persistentvolumeclaims", True),
    ("ResourceQuota", "v1", "resourcequotas", True),
    ("LimitRange", "v1", "limitranges", True),
    ("Endpoints", "v1", "endpoints", True),
    ("PodTemplate", "v1", "podtemplates", True),
    ("ReplicationController", "v1", "replicationcontrollers", True),
    ("Namespace", "v1", "namespaces", False),
    ("PersistentVolume", "v1", "persistentvolumes", False),
    ("Ingress", "networking.k8s.io/v1", "ingresses", True),
    ("IngressClass", "networking.k8s.io/v1", "ingressclasses", False),
    ("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", True),
    ("HorizontalPodAutoscaler", "autoscaling/v2", "horizontalpodautoscalers", True),
    ("PodDisruptionBudget", "policy/v1", "poddisruptionbudgets", True),
    ("Role", "rbac.authorization.k8s.io/v1", "roles", True),
    ("RoleBinding", "rbac.authorization.k8s.io/v1", "rolebindings", True),
    ("ClusterRole", "rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    ("PriorityClass", "scheduling.k8s.io/v1", "priorityclasses", False),
    ("StorageClass", "storage.k8s.io/v1", "storageclasses", False),
    ("RuntimeClass", "node.k8s.io/v1", "runtimeclasses", False),
    ("CustomResourceDefinition", "apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    (
        "MutatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        False,
    ),
    (
        "ValidatingWebhookConfiguration",
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        False,
    ),
)
# Versions the API server still serves besides the one in the table (autoscaling/v1 HPAs).
OTHER_VERSIONS = {("HorizontalPodAutoscaler", "autoscaling", "v1")}


@dataclass(frozen=True)
class Location:
    """Where an object came from: the file (``-`` for stdin), the document (1-based) and, in a
    ``List``, the item (0-based)."""

    source: str
    document: int = 0
    item: int | None = None

    def __str__(self) -> str:
        if self.document == 0:
            return self.source
        text = f"{self.source}, document {self.document}"
        return text if self.item is None else f"{text}, items[{self.item}]"


@dataclass(frozen=True)
class Manifest:
    """One object to test, as written in its file."""

    location: Location
    obj: JsonObject
    kind: KindInfo

    @property
    def name(self) -> str:
        metadata = self.obj.get("metadata") or {}
        return str(metadata.get("name") or metadata.get("generateName") or "")

    @property
    def namespace(self) -> str:
        return str((self.obj.get("metadata") or {}).get("namespace") or "")


@dataclass(frozen=True)
class ManifestError:
    """A document that cannot be tested, and why."""

    location: Location
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass(frozen=True)
class ManifestSet:
    manifests: tuple[Manifest, ...]
    errors: tuple[ManifestError, ...]


def read_manifests(sources: Sequence[str | Path], *, stdin: TextIO | None = None) -> ManifestSet:
    """Every object of ``sources`` (files, folders, ``-``), in order, and every unusable one."""
    manifests: list[Manifest] = []
    errors: list[ManifestError] = []
    for source, text in _read_sources(sources, stdin=stdin, errors=errors):
        for item in parse_manifest_text(source, text):
            (errors if isinstance(item, ManifestError) else manifests).append(item)  # type: ignore[arg-type]
    return ManifestSet(tuple(manifests), tuple(errors))


def _read_sources(
    sources: Sequence[str | Path], *, stdin: TextIO | None, errors: list[ManifestError]
) -> Iterator[tuple[str, str]]:
    for source in sources:
        if str(source) == STDIN:
            if stdin is None:
                errors.append(ManifestError(Location(STDIN), "stdin is not available"))
                continue
            yield STDIN, stdin.read()
            continue
        path = Path(source)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix in MANIFEST_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                errors.append(ManifestError(Location(str(path)), "folder holds no manifest files"))
            for file in files:
                yield from _read_file(file, errors)
        else:
            yield from _read_file(path, errors)


def _read_file(path: Path, errors: list[ManifestError]) -> Iterator[tuple[str, str]]:
    try:
        yield str(path), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(ManifestError(Location(str(path)), "no such file or folder"))
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ManifestError(Location(str(path)), f"cannot be read: {exc}"))


def parse_manifest_text(source: str, text: str) -> list[Manifest | ManifestError]:
    """The objects of one file's text, each checked (``check_object``), or why not."""
    out: list[Manifest | ManifestError] = []
    for document, parsed in enumerate(_split_documents(source, text), start=1):
        location = Location(source, document)
        if isinstance(parsed, ManifestError):
            out.append(ManifestError(location, parsed.reason))
            continue
        if parsed is None:
            continue
        if isinstance(parsed, dict) and _is_list(parsed):
            items = parsed.get("items") or []
            if not isinstance(items, list):
                out.append(ManifestError(location, f"{parsed['kind']} has no items list"))
                continue
            for index, item in enumerate(items):
                out.append(check_object(item, Location(source, document, index)))
            continue
        out.append(check_object(parsed, location))
    return out


def _is_list(obj: JsonObject) -> bool:
    kind = obj.get("kind")
    return kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in obj)


def _split_documents(source: str, text: str) -> list[Any]:
    """Each document's value (None when empty), or a ManifestError for one that does not parse.

    JSON is one document. YAML is split on ``---`` lines first, so that one broken document
    does not hide the others (``kubectl`` splits the same way).
    """
    stripped = text.lstrip()
    if source.endswith(".json") or stripped.startswith("{"):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            return [
                ManifestError(Location(source), f"not valid JSON: line {exc.lineno}: {exc.msg}")
            ]
    chunks: list[tuple[int, list[str]]] = [(1, [])]
    for number, line in enumerate(text.splitlines(), start=1):
        if _SEPARATOR.match(line):
            chunks.append((number + 1, []))
        else:
            chunks[-1][1].append(line)
    if not any(line.strip() for line in chunks[0][1]) and len(chunks) > 1:
        chunks.pop(0)  # a file that starts with "---"
    documents: list[Any] = []
    for first_line, lines in chunks:
        try:
            documents.append(yaml.safe_load("\n".join(lines)))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = first_line + mark.line if mark is not None else first_line
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            documents.append(
                ManifestError(Location(source), f"not valid YAML: line {at}: {problem}")
            )
    return documents


def check_object(obj: Any, location: Location) -> Manifest | ManifestError:
    """``obj`` as a manifest to test, or the reason it cannot be one."""
    reason = _find_problem(obj)
    if reason:
        return ManifestError(location, reason)
    return Manifest(location=location, obj=obj, kind=find_kind(obj))


def find_kind(obj: JsonObject) -> KindInfo:
    """The KindInfo of a checked object (custom resources get the conventional plural)."""
    kind = str(obj["kind"])
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    known = KINDS.get(kind)
    if known is not None and known.group == group:
        return KindInfo(kind, group, version, known.resource, known.namespaced)
    return KindInfo(kind, group, version, kind.lower() + "s", True)


def is_custom_group(group: str) -> bool:
    """A group only a CustomResourceDefinition can add (built-in groups have no dot, or end in
    ``.k8s.io``)."""
    return "." in group and not group.endswith(".k8s.io")


def _find_problem(obj: Any) -> str:
    if not isinstance(obj, dict):
        got = "a list" if isinstance(obj, list) else f"a {type(obj).__name__}"
        return f"not a Kubernetes object: the document is {got}, not a mapping"
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        return "has no kind"
    if not isinstance(api_version, str) or not api_version:
        return f"{kind} has no apiVersion"
    group, _, version = api_version.rpartition("/")
    known = KINDS.get(kind)
    if known is None and not is_custom_group(group):
        return (
            f"unknown kind {kind!r} in {api_version}: not a built-in Kubernetes kind "
            "(check its spelling), nor in a custom resource group"
        )
    if (
        known is not None
        and (known.group, known.version) != (group, version)
        and (kind, group, version) not in OTHER_VERSIONS
        and not is_custom_group(group)
    ):
        return f"{kind} is served as {known.api_version}, not {api_version}"
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return f"{kind} has no metadata"
    if not (metadata.get("name") or metadata.get("generateName")):
        return f"{kind} has no metadata.name"
    for field in ("name", "namespace"):
        if field in metadata and not isinstance(metadata[field], str):
            return f"{kind} metadata.{field} is not a string"
    return _pod_problem(obj, kind) if kind in POD_BEARING_KINDS else ""


def _pod_problem(obj: JsonObject, kind: str) -> str:
    path = template_path(kind) or ()
    spec_path = ".".join((*path, "spec"))
    templates = find_pod_templates(obj)
    if not templates:
        return f"a {kind} without containers: {spec_path} is missing"
    containers = templates[0].spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return f"a {kind} without containers: {spec_path}.containers is missing or empty"
    for index, container in enumerate(containers):
        where = f"{spec_path}.containers[{index}]"
        if not isinstance(container, dict):
            return f"{where} is not a mapping"
        if not isinstance(container.get("name"), str) or not container["name"]:
            return f"{where} has no name"
    return ""
