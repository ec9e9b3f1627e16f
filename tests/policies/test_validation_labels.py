"""The words of the score rules, worked out once per setting."""

from __future__ import annotations

import pytest

from policies.validation_labels import _score_terms


@pytest.mark.parametrize(
    ("bound", "minimum", "terms"),
    [
        (0.85, True, ("metadata.annotations.a", "at least 0.85", "accuracy")),
        (1, True, ("metadata.annotations.a", "at least 1", "accuracy")),
        (1.0, True, ("metadata.annotations.a", "at least 1.0", "accuracy")),
        (0.1, False, ("metadata.annotations.a", "at most 0.1", "bias score")),
    ],
    ids=["float-minimum", "int-bound-as-written", "float-bound-as-written", "maximum"],
)
def test_score_terms_word_the_bound_as_the_policy_gives_it(
    bound: float, minimum: bool, terms: tuple[str, str, str]
) -> None:
    assert _score_terms("a", bound, minimum) == terms
