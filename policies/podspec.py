"""Find the pod specs of any workload: write each pod rule once, against a pod spec.

Kyverno calls this autogen. A pod spec lives at:
- ``spec`` of a Pod,
- ``spec.template.spec`` of a Deployment, StatefulSet, ReplicaSet, DaemonSet, Job and an Argo
  ``Rollout``,
- ``spec.jobTemplate.spec.template.spec`` of a CronJob.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]

TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job", "Rollout"}
)
POD_BEARING_KINDS = frozenset({"Pod", "CronJob"} | TEMPLATE_KINDS)
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(init=False)
class PodTemplate:
    """A pod spec inside an object, with the metadata that goes with it.

    ``path`` is the JSON path of the pod spec's parent (``()`` for a Pod, whose metadata is the
    object's own; ``("spec", "template")`` for a Deployment...). ``metadata`` and ``spec`` are the
    live dicts inside the object, so a mutator that works on a copy of the object edits them in
    place. ``metadata`` may be a fresh empty dict the caller must attach (see ``ensure_metadata``).
    ``object_metadata`` is the object's own metadata (``metadata`` itself for a Pod).
    """

    path: tuple[str, ...]
    metadata: JsonObject
    spec: JsonObject
    object_metadata: JsonObject = field(default_factory=dict, compare=False, repr=False)

    # Read once, on first use (workload_labels, workload_annotations), and kept.
    _labels: dict[str, str] | None = field(default=None, compare=False, repr=False)
    _annotations: dict[str, str] | None = field(default=None, compare=False, repr=False)

    # NOTE: not frozen, as policies.results.CheckResult; every request finds its templates, and
    # mutation copies them. Read only by use: nothing assigns a field after __init__.
    def __init__(
        self,
        path: tuple[str, ...],
        metadata: JsonObject,
        spec: JsonObject,
        object_metadata: JsonObject | None = None,
    ) -> None:
        self.path = path
        self.metadata = metadata
        self.spec = spec
        self.object_metadata = {} if object_metadata is None else object_metadata
        self._labels = None
        self._annotations = None

    # NOTE: read once, on first use, and kept: every mutator and check of a request asks for
    # them, and none of them changes the labels or annotations it reads.
    @property
    def workload_labels(self) -> dict[str, str]:
        """The labels of the object, falling back on this template's for keys it lacks."""
        labels = self._labels
        if labels is None:
            labels = self._labels = _merge_maps(self, "labels")
        return labels

    @property
    def workload_annotations(self) -> dict[str, str]:
        """The annotations of the object, falling back on this template's for keys it lacks."""
        annotations = self._annotations
        if annotations is None:
            annotations = self._annotations = _merge_maps(self, "annotations")
        return annotations

    def moved_to(
        self, *, metadata: JsonObject, spec: JsonObject, object_metadata: JsonObject
    ) -> PodTemplate:
        """This template in a copy of its object, given the copy's dicts.

        The workload labels and annotations already read are kept: the copy holds the same.
        """
        moved = PodTemplate(self.path, metadata, spec, object_metadata)
        moved._labels = self._labels
        moved._annotations = self._annotations
        return moved


# The path of the pod template of each kind that carries one: () for a Pod.
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": (),
    **dict.fromkeys(TEMPLATE_KINDS, ("spec", "template")),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def template_path(kind: str) -> tuple[str, ...] | None:
    """The path of the pod template of ``kind``: () for a Pod, None for kinds with no pod spec."""
    return TEMPLATE_PATHS.get(kind)


def find_pod_templates(obj: JsonObject) -> list[PodTemplate]:
    """Every pod spec of ``obj`` (at most one today), empty for kinds that carry none.

    Objects missing their template or spec yield nothing rather than raise: the API server
    rejects such objects itself, after us.
    """
    kind = obj.get("kind")
    if not isinstance(kind, str):
        return []
    path = TEMPLATE_PATHS.get(kind)
    if path is None:
        return []
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return []
    spec = node.get("spec")
    if not isinstance(spec, dict):
        return []
    metadata = node.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    # NOTE: positional arguments and a table of paths rather than keywords and a function:
    # validation finds the templates twice per request (callgrind per call over the benchmark
    # bodies: 11,497 -> 9,750 instructions).
    return [PodTemplate(path, metadata, spec, _metadata(obj))]


def ensure_metadata(obj: JsonObject, template: PodTemplate) -> JsonObject:
    """Attach ``template.metadata`` to ``obj`` if it was made up, and return it."""
    node: Any = obj
    for key in template.path:
        node = node[key]
    if node.get("metadata") is not template.metadata:
        node["metadata"] = template.metadata
    return template.metadata


def iter_containers(
    spec: JsonObject, lists: tuple[str, ...] = CONTAINER_LISTS
) -> list[tuple[str, JsonObject]]:
    """(list name, container) for every container of a pod spec, init and ephemeral included."""
    # NOTE: a list built in one call rather than a generator: the mutators walk the containers
    # several times per request, and a generator costs its creation and a resume per item.
    found = []
    for list_name in lists:
        containers = spec.get(list_name)
        if isinstance(containers, list):
            for container in containers:
                if isinstance(container, dict):
                    found.append((list_name, container))
    return found


def app_containers(spec: JsonObject) -> list[JsonObject]:
    """The regular (app) containers of a pod spec."""
    containers = spec.get("containers")
    if not isinstance(containers, list):
        return []
    return [c for c in containers if isinstance(c, dict)]


def workload_labels(obj: JsonObject) -> dict[str, str]:
    """The labels of the object, falling back on its pod template's for keys it lacks."""
    templates = find_pod_templates(obj)
    if templates:
        return templates[0].workload_labels
    return _str_map(_metadata(obj).get("labels"))


def workload_annotations(obj: JsonObject) -> dict[str, str]:
    """The annotations of the object, falling back on its pod template's for keys it lacks."""
    templates = find_pod_templates(obj)
    if templates:
        return templates[0].workload_annotations
    return _str_map(_metadata(obj).get("annotations"))


def _merge_maps(template: PodTemplate, key: str) -> dict[str, str]:
    merged = _str_map(template.metadata.get(key))
    if template.object_metadata is not template.metadata:  # a Pod's are one and the same
        merged.update(_str_map(template.object_metadata.get(key)))
    return merged


def _metadata(obj: JsonObject) -> JsonObject:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    # NOTE: labels and annotations are nearly always all strings: checked in a loop and copied
    # whole, cheaper than a comprehension (a function call of its own) for a map of a few keys.
    for k, v in value.items():
        if not (isinstance(k, str) and isinstance(v, str)):
            return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    return dict(value)
