"""Fill-in-what-is-missing edits of Kubernetes fields, shared by the mutators.

Every helper follows one rule: a value the author set is kept unless ``override`` is true, and a
helper reports what it did, so a mutator knows whether it changed anything and whether to warn.
A JSON ``null`` counts as absent, as it does for the API server.
"""

from __future__ import annotations

import re
from typing import Any, Literal

JsonObject = dict[str, Any]

# "added": the field was absent and is now set; "replaced": an author value was overridden;
# "same": it already held the value; "kept": the author's different value was left alone.
Fill = Literal["added", "replaced", "same", "kept"]

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def read_field(node: Any, *keys: str) -> Any:
    """The value at ``keys`` under ``node``, None when any step is missing or not an object."""
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON values: ``1`` and ``true`` differ, though Python says they are equal."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same_json(v, right[k]) for k, v in left.items())
    if isinstance(left, list):
        return len(left) == len(right) and all(map(same_json, left, right))
    return bool(left == right)


def fill_field(node: JsonObject, keys: tuple[str, ...], *, value: Any, override: bool) -> Fill:
    """Set ``value`` at ``keys`` under ``node`` if absent (or always, with ``override``).

    Intermediate objects are created only when something is written, so a mutator that ends up
    writing nothing leaves no empty ``{}`` behind.
    """
    # NOTE: one walk down to the parent, reading and writing there: called tens of times per
    # request, a second walk (read_field, then again to write) was a tenth of the mutators' CPU.
    *path, last = keys
    parent: Any = node  # None once an object on the way is missing
    for key in path:
        child = parent.get(key)
        if not isinstance(child, dict):
            parent = None
            break
        parent = child
    if parent is not None:
        return fill_key(parent, last, value, override=override)
    parent = node  # make the missing objects on the way (replacing a value that is not one)
    for key in path:
        child = parent.get(key)
        if not isinstance(child, dict):
            child = parent[key] = {}
        parent = child
    parent[last] = value
    return "added"


def fill_key(parent: JsonObject, key: str, value: Any, *, override: bool) -> Fill:
    """``fill_field`` for one key of ``parent``, an object that already exists."""
    existing = parent.get(key)
    if existing is None:
        parent[key] = value
        return "added"
    if same_json(existing, value):
        return "same"
    if not override:
        return "kept"
    parent[key] = value
    return "replaced"


def ensure_list(node: JsonObject, key: str) -> list[Any]:
    """The list at ``node[key]``, made (replacing a null) when absent; call only to append."""
    value = node.get(key)
    if not isinstance(value, list):
        value = node[key] = []
    return value


def fill_named(
    node: JsonObject, list_key: str, *, item: JsonObject, override: bool, key: str = "name"
) -> Fill:
    """Append ``item`` to the list ``node[list_key]`` unless an entry with its ``key`` exists.

    An existing entry that differs is replaced only with ``override``. Used for volumes (by
    name), volume mounts (by mountPath) and env vars (by name), so none is ever duplicated.
    """
    # NOTE: the search and ensure_list written out here: two calls fewer for every volume and
    # mount filled in.
    items = node.get(list_key)
    if not isinstance(items, list):
        node[list_key] = [item]
        return "added"
    name = item[key]
    for index, existing in enumerate(items):
        if isinstance(existing, dict) and existing.get(key) == name:
            if same_json(existing, item):
                return "same"
            if not override:
                return "kept"
            items[index] = item
            return "replaced"
    items.append(item)
    return "added"


def normalise_path(path: str) -> str:
    """A mount path without its trailing slashes (``/tmp/`` and ``/tmp`` are one mount)."""
    stripped = path.rstrip("/")
    return stripped or "/"


def container_label(list_name: str, container: JsonObject) -> str:
    """How a warning names a container: ``container "server"``, ``init container "fetch"``."""
    kind = "init container" if list_name == "initContainers" else "container"
    return f'{kind} "{container.get("name", "?")}"'
