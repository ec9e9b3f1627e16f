"""Our JSON Patch diff gives patches that jsonpatch applies to exactly the mutated value."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutators.diff import copy_json, escape_pointer, make_patch

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
# Keys that need JSON-Pointer escaping, and numeric keys that look like list indices.
json_keys = st.text(max_size=6) | st.sampled_from(
    ["a/b", "~", "~1", "prometheus.io/scrape", "0", "-"]
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=30,
)


def same_json(left: Any, right: Any) -> bool:
    """Equal as JSON: unlike ``==``, tells ``1`` from ``1.0`` from ``true``."""
    option = orjson.OPT_SORT_KEYS
    return orjson.dumps(left, option=option) == orjson.dumps(right, option=option)


def mutate_randomly(value: Any, data: st.DataObject) -> Any:
    """A value derived from ``value`` by edits like mutators make, and some they never do."""
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        result = dict(value)
        key = data.draw(st.sampled_from(sorted(result)))
        action = data.draw(st.sampled_from(["recurse", "drop", "replace"]))
        if action == "recurse":
            result[key] = mutate_randomly(result[key], data)
        elif action == "drop":
            del result[key]
        else:
            result[key] = data.draw(json_values)
        if data.draw(st.booleans()):
            result[data.draw(json_keys)] = data.draw(json_values)
        return result
    if isinstance(value, list) and value and data.draw(st.booleans()):
        result_list = list(value)
        index = data.draw(st.integers(0, len(result_list) - 1))
        result_list[index] = mutate_randomly(result_list[index], data)
        if data.draw(st.booleans()):
            result_list.extend(data.draw(st.lists(json_values, max_size=3)))
        elif data.draw(st.booleans()):
            del result_list[index]
        return result_list
    return data.draw(json_values)


@settings(max_examples=400)
@given(original=json_values, data=st.data())
def test_patch_turns_original_into_mutated(original: Any, data: st.DataObject) -> None:
    mutated = mutate_randomly(copy_json(original), data)
    before = copy.deepcopy(original)
    patch = make_patch(original, mutated)
    result = jsonpatch.apply_patch(original, patch)
    assert same_json(result, mutated)
    assert jsonpatch.make_patch(result, mutated).patch == []
    assert original == before  # the diff does not touch its inputs


@settings(max_examples=200)
@given(original=json_values, mutated=json_values)
def test_patch_between_unrelated_values_applies(original: Any, mutated: Any) -> None:
    patch = make_patch(original, mutated)
    assert same_json(jsonpatch.apply_patch(original, patch), mutated)


@given(value=json_values)
def test_equal_values_give_empty_patch(value: Any) -> None:
    assert make_patch(value, copy_json(value)) == []


@pytest.mark.parametrize(
    ("original", "mutated", "patch"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, [{"op": "add", "path": "/b", "value": 2}]),
        ({"a": 1, "b": 2}, {"a": 1}, [{"op": "remove", "path": "/b"}]),
        ({"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
        ({"a": 1}, {"a": True}, [{"op": "replace", "path": "/a", "value": True}]),
        ({"a": 0}, {"a": 0.0}, [{"op": "replace", "path": "/a", "value": 0.0}]),
        (
            {"metadata": {"annotations": {}}},
            {"metadata": {"annotations": {"prometheus.io/scrape": "true"}}},
            [{"op": "add", "path": "/metadata/annotations/prometheus.io~1scrape", "value": "true"}],
        ),
        ({"a~b": [1]}, {"a~b": [1, 2]}, [{"op": "add", "path": "/a~0b/-", "value": 2}]),
        ({"l": [1, 2, 3]}, {"l": [1]}, [{"op": "replace", "path": "/l", "value": [1]}]),
        (
            {"l": [{"n": "a"}, {"n": "b"}]},
            {"l": [{"n": "a"}, {"n": "b", "v": 1}]},
            [{"op": "add", "path": "/l/1/v", "value": 1}],
        ),
        ({"a": {"b": 1}}, {"a": {"b": 1}}, []),
        ([1], {"0": 1}, [{"op": "replace", "path": "", "value": {"0": 1}}]),
    ],
    ids=[
        "new-key-added",
        "missing-key-removed",
        "changed-scalar-replaced",
        "int-to-bool-is-a-change",
        "int-to-float-is-a-change",
        "slash-in-key-escaped",
        "tilde-in-key-escaped-and-append",
        "shrunk-list-replaced-whole",
        "change-inside-list-element",
        "equal-gives-nothing",
        "root-type-change-replaces-root",
    ],
)
def test_make_patch_emits_minimal_operations(
    original: Any, mutated: Any, patch: list[dict[str, Any]]
) -> None:
    assert make_patch(original, mutated) == patch
    assert same_json(jsonpatch.apply_patch(original, patch), mutated)


@pytest.mark.parametrize(
    ("key", "token"),
    [("plain", "plain"), ("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1"), ("~1", "~01")],
    ids=["plain", "slash", "tilde", "both", "tilde-one-literal"],
)
def test_escape_pointer_follows_rfc6901(key: str, token: str) -> None:
    assert escape_pointer(key) == token


@pytest.mark.parametrize(
    "value",
    [{"a": [1, {"b": None}]}, {"big": 2**70, "l": [2**65]}, [1.5, "x", True]],
    ids=["nested", "beyond-64-bit-ints", "list-root"],
)
def test_copy_json_is_deep_and_equal(value: Any) -> None:
    copied = copy_json(value)
    assert copied == value
    assert make_patch(value, copied) == []
    if isinstance(value, dict):
        assert all(copied[key] is not item for key, item in value.items() if isinstance(item, list))
