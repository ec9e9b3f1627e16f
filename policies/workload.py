"""Small facts about the object under review that every check words its messages with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from policies.podspec import (
    CONTAINER_LISTS,
    PodTemplate,
    find_pod_templates,
    workload_annotations,
    workload_labels,
)

JsonObject = dict[str, Any]
PathPart = str | int


@dataclass(frozen=True)
class ContainerRef:
    """One container of a pod spec, with where it sits in the object."""

    list_name: str  # "initContainers", "containers" or "ephemeralContainers"
    index: int
    container: JsonObject
    path: tuple[PathPart, ...]  # e.g. ("spec", "template", "spec", "containers", 0)

    @property
    def name(self) -> str:
        name = self.container.get("name")
        return name if isinstance(name, str) else f"#{self.index}"

    def describe(self) -> str:
        """``container model-server`` / ``init container fetch-weights``."""
        kind = {"initContainers": "init container", "ephemeralContainers": "ephemeral container"}
        return f"{kind.get(self.list_name, 'container')} {self.name}"


@dataclass(frozen=True)
class Workload:
    """The object under review, with the facts the checks read about it.

    NOTE: every check of every selected policy looks at the same object; each fact is worked
    out on first use and kept, rather than once per check (the engine makes one per request).
    Nothing here changes the object.
    """

    obj: JsonObject
    namespace: str  # the request's, for objects that do not say theirs

    @cached_property
    def templates(self) -> list[PodTemplate]:
        return find_pod_templates(self.obj)

    @cached_property
    def description(self) -> str:
        """``deployment ml-prod/recommender`` (see ``describe_workload``)."""
        return describe_workload(self.obj, namespace=self.namespace)

    @cached_property
    def controller(self) -> str | None:
        """``Deployment recommender`` when a controller owns the object (``find_controller``)."""
        return find_controller(self.obj)

    @cached_property
    def labels(self) -> dict[str, str]:
        """The object's labels, falling back on its pod template's (``workload_labels``)."""
        return self.templates[0].workload_labels if self.templates else workload_labels(self.obj)

    @cached_property
    def annotations(self) -> dict[str, str]:
        """The object's annotations, falling back on its pod template's."""
        if self.templates:
            return self.templates[0].workload_annotations
        return workload_annotations(self.obj)

    @cached_property
    def containers(self) -> list[ContainerRef]:
        """Every container of every pod spec, as ``iter_container_refs`` gives them."""
        return [ref for t in self.templates for ref in iter_template_containers(t)]


def iter_container_refs(obj: JsonObject) -> Iterator[ContainerRef]:
    """Every container of every pod spec of ``obj``: init, app and ephemeral ones."""
    for template in find_pod_templates(obj):
        yield from iter_template_containers(template)


def iter_template_containers(
    template: PodTemplate, lists: tuple[str, ...] = CONTAINER_LISTS
) -> Iterator[ContainerRef]:
    """The containers of one pod template, with their paths."""
    for list_name in lists:
        containers = template.spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if isinstance(container, dict):
                path: tuple[PathPart, ...] = (*template.path, "spec", list_name, index)
                yield ContainerRef(list_name, index, container, path)


def describe_workload(obj: JsonObject, *, namespace: str) -> str:
    """``deployment ml-prod/recommender``: lower-case kind, namespace and name."""
    kind = obj.get("kind")
    kind_word = kind.lower() if isinstance(kind, str) and kind else "object"
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        generate = metadata.get("generateName")
        name = f"{generate}<generated>" if isinstance(generate, str) and generate else "<unnamed>"
    ns = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else namespace
    return f"{kind_word} {ns}/{name}" if ns else f"{kind_word} {name}"


def format_path(path: tuple[PathPart, ...]) -> str:
    """``spec.template.spec.containers[0].image`` from its parts."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def find_controller(obj: JsonObject) -> str | None:
    """``Deployment recommender`` when a controller owns ``obj``, else None."""
    metadata = obj.get("metadata")
    refs = metadata.get("ownerReferences") if isinstance(metadata, dict) else None
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return f"{ref.get('kind', 'a controller')} {ref.get('name', '')}".rstrip()
    return None
