"""The copy of an object the mutators edit: only what a mutator may write is copied.

An admitted object is mostly things no mutator touches: ``managedFields``, the last-applied
configuration, ``status``, a Deployment's own spec, a container's ports and probes. The working
copy shares those with the original and copies (shallowly) only the dicts and lists a mutator
writes into, and the path down to them.

NOTE: shared subtrees are the *same objects* in the original and the copy, so they cost nothing
to copy and ``make_patch`` skips them at its identity check: together about half the CPU of a
mutation, against a deep copy. The price is a rule: a mutator writes only into the dicts and
lists listed below (adding, replacing or removing their keys or items); every value it puts
there is new. A write anywhere else would change the original and be missing from the patch;
``tests/mutators/workloads.run_mutator`` runs every mutator test on a working copy and checks
that the original is unchanged and that the patch gives the mutated object.
"""

from __future__ import annotations

from typing import Any

from policies.podspec import CONTAINER_LISTS, PodTemplate

JsonObject = dict[str, Any]
# A tree of the keys a mutator may write into, each to copy: "*" stands for every item of a list.
Writes = dict[str, "Writes"]

CONTAINER_WRITES: Writes = {
    "env": {},
    "envFrom": {},
    "volumeMounts": {},
    "resources": {"requests": {}, "limits": {}},
    "securityContext": {"capabilities": {"drop": {}}},
}
POD_SPEC_WRITES: Writes = {
    "volumes": {},
    "tolerations": {},
    "nodeSelector": {},
    "securityContext": {},
    **{list_name: {"*": CONTAINER_WRITES} for list_name in CONTAINER_LISTS},
}
# Of an object's metadata and of a pod template's; a pod spec's place is written only to attach
# a made-up template metadata (``ensure_metadata``).
METADATA_WRITES: Writes = {"annotations": {}}


def make_working_copy(
    obj: JsonObject, templates: list[PodTemplate]
) -> tuple[JsonObject, list[PodTemplate]]:
    """A copy of ``obj`` for the mutators to edit, and ``templates`` (found in ``obj``) in it."""
    working = dict(obj)
    object_metadata = _copy_metadata(working)
    moved: list[PodTemplate] = []
    for template in templates:
        node = working
        for key in template.path:  # each step is an object: find_pod_templates went through it
            child = dict(node[key])
            node[key] = child
            node = child
        spec = copy_writable(node["spec"], POD_SPEC_WRITES)
        node["spec"] = spec
        # A Pod's template metadata is the object's own.
        metadata = _copy_metadata(node) if template.path else object_metadata
        moved.append(
            template.moved_to(metadata=metadata, spec=spec, object_metadata=object_metadata)
        )
    return working, moved


def copy_writable(value: Any, writes: Writes) -> Any:
    """``value`` with the dicts and lists named by ``writes`` copied, and the path to them.

    Anything else is shared with ``value``. A value of an unexpected JSON type (a list where an
    object belongs) is copied shallowly as found: a mutator replaces such a value, never edits it.
    """
    if isinstance(value, dict):
        copied = dict(value)
        # NOTE: only the keys that both have: a pod spec has a few of the seven it may be
        # written at, a container a few of five.
        for key in writes.keys() & value.keys():
            item = copied[key]
            if isinstance(item, (dict, list)):  # a tuple: checked faster than dict | list
                below = writes[key]
                # A leaf of the tree without a call: most of them are.
                copied[key] = copy_writable(item, below) if below else item.copy()
        return copied
    if isinstance(value, list):
        each = writes.get("*")
        if each is None:
            return list(value)
        return [copy_writable(item, each) for item in value]
    return value


def _copy_metadata(node: JsonObject) -> JsonObject:
    """``node["metadata"]`` replaced by its working copy.

    A missing metadata gives a fresh dict left detached, as ``find_pod_templates`` makes it.
    """
    metadata = node.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    # NOTE: copy_writable(metadata, METADATA_WRITES) written out: its one key needs no walk.
    copied = node["metadata"] = dict(metadata)
    annotations = copied.get("annotations")
    if isinstance(annotations, (dict, list)):
        copied["annotations"] = annotations.copy()
    return copied
