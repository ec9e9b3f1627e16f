"""Small facts about the object under review that every check words its messages with."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, NamedTuple

from policies.podspec import (
    CONTAINER_LISTS,
    PodTemplate,
    find_pod_templates,
    workload_annotations,
    workload_labels,
)

JsonObject = dict[str, Any]
PathPart = str | int


class ContainerRef(NamedTuple):
    """One container of a pod spec, with where it sits in the object.

    A NamedTuple rather than a frozen dataclass: a request makes one for every container, and a
    NamedTuple is built for a fraction of the cost.
    """

    list_name: str  # "initContainers", "containers" or "ephemeralContainers"
    position: int  # its index in that list
    container: JsonObject
    path: tuple[PathPart, ...]  # e.g. ("spec", "template", "spec", "containers", 0)

    @property
    def name(self) -> str:
        name = self.container.get("name")
        return name if isinstance(name, str) else f"#{self.position}"

    def describe(self) -> str:
        """``container model-server`` / ``init container fetch-weights``."""
        kind = {"initContainers": "init container", "ephemeralContainers": "ephemeral container"}
        return f"{kind.get(self.list_name, 'container')} {self.name}"


class Workload(NamedTuple):
    """The object under review, with the facts the checks read about it.

    NOTE: every check of every selected policy looks at the same object; the engine reads these
    facts once per request (``Workload.of``) rather than each check reading them again. Worked
    out up front, not on first use: every default check needs them, and Python 3.11's
    ``cached_property`` costs more per request (it takes a lock) than what it would save. A
    NamedTuple, as ``ContainerRef``.
    """

    obj: JsonObject
    templates: list[PodTemplate]
    description: str  # ``deployment ml-prod/recommender``, see ``describe_workload``
    controller: str | None  # ``Deployment recommender`` when one owns the object
    labels: dict[str, str]  # the object's, falling back on its pod template's
    annotations: dict[str, str]  # likewise
    containers: list[ContainerRef]  # every container of every pod spec

    @classmethod
    def of(cls, obj: JsonObject, *, namespace: str) -> Workload:
        """The facts of ``obj``; ``namespace`` is the request's, for objects that omit theirs."""
        templates = find_pod_templates(obj)
        if templates:
            labels = templates[0].workload_labels
            annotations = templates[0].workload_annotations
        else:
            labels, annotations = workload_labels(obj), workload_annotations(obj)
        return cls(
            obj=obj,
            templates=templates,
            description=describe_workload(obj, namespace=namespace),
            controller=find_controller(obj),
            labels=labels,
            annotations=annotations,
            containers=[ref for t in templates for ref in template_containers(t)],
        )

    def images(self) -> tuple[str, ...]:
        """The image of every container, each once, in container order."""
        return tuple(
            dict.fromkeys(
                image
                for ref in self.containers
                if isinstance(image := ref.container.get("image"), str)
            )
        )


def iter_container_refs(obj: JsonObject) -> Iterator[ContainerRef]:
    """Every container of every pod spec of ``obj``: init, app and ephemeral ones."""
    for template in find_pod_templates(obj):
        yield from template_containers(template)


def template_containers(
    template: PodTemplate, lists: tuple[str, ...] = CONTAINER_LISTS
) -> list[ContainerRef]:
    """The containers of one pod template, with their paths.

    NOTE: a list, not a generator: every request reads them all, and resuming a generator per
    container cost more than the loop (callgrind).
    """
    refs: list[ContainerRef] = []
    for list_name in lists:
        containers = template.spec.get(list_name)
        if not isinstance(containers, list):
            continue
        for index, container in enumerate(containers):
            if isinstance(container, dict):
                path: tuple[PathPart, ...] = (*template.path, "spec", list_name, index)
                refs.append(ContainerRef(list_name, index, container, path))
    return refs


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


@functools.lru_cache(maxsize=4096)
def format_path(path: tuple[PathPart, ...]) -> str:
    """``spec.template.spec.containers[0].image`` from its parts.

    Remembered: an object's paths are the few of its kind's pod template, and every request
    words the same ones (a loop over the parts cost ~6,000 instructions, callgrind).
    """
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
