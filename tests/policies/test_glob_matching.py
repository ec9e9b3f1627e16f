"""Namespace globs compiled once per policy give exactly what ``fnmatchcase`` gives."""

from __future__ import annotations

import itertools
from fnmatch import fnmatchcase

import pytest

from policies.matching import matches_glob

PATTERNS = ("*", "*-prod", "ml-*", "team-00?-x", "kube-system", "[ab]c", "a[!b]c", "x.y",
            "a*b*c", "", "[", "a\\b", "ns/*")  # fmt: skip
VALUES = ("ml-prod", "kube-system", "bc", "ac", "abc", "axc", "team-001-x", "team-01-x", "x.y",
          "xzy", "", "[", "a\\b", "ns/x", "aXbYc", "prod\n", "ml-\nprod")  # fmt: skip


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        pytest.param("ml-prod", ("*-prod",), True, id="suffix-glob"),
        pytest.param("ml-prod", ("*-production", "ml-*"), True, id="second-of-two-globs"),
        pytest.param("kube-system", ("kube-system",), True, id="exact-name"),
        pytest.param("kube-systems", ("kube-system",), False, id="exact-name-is-not-a-prefix"),
        pytest.param("x.y", ("x.y",), True, id="dot-is-literal"),
        pytest.param("xzy", ("x.y",), False, id="dot-is-not-any-character"),
        pytest.param("[", ("[",), True, id="lone-bracket-equals-itself"),
        pytest.param("team-001-x", ("team-00?-x",), True, id="question-mark-one-character"),
        pytest.param("team-01-x", ("team-00?-x",), False, id="question-mark-not-zero"),
        pytest.param("prod\n", ("*-prod", "prod"), False, id="no-match-across-trailing-newline"),
        pytest.param("anything", (), False, id="no-patterns-match-nothing"),
    ],
)
def test_namespace_glob(value: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert matches_glob(value, patterns) is expected


@pytest.mark.parametrize("size", [1, 2, 3], ids=lambda n: f"{n}-patterns")
def test_compiled_globs_agree_with_fnmatchcase(size: int) -> None:
    for patterns in itertools.combinations(PATTERNS, size):
        for value in VALUES:
            expected = any(value == p or fnmatchcase(value, p) for p in patterns)
            assert matches_glob(value, list(patterns)) is expected, (value, patterns)
