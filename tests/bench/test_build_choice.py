"""Which build ``python -m bench`` measures: by default the one the image runs (compiled)."""

from __future__ import annotations

import argparse

import pytest

from bench.run import rebuild_compiled

COMPILED, INTERPRETED = "compiled with mypyc", "interpreted"


def flags(
    *, compiled: bool = False, interpreted: bool = False, quick: bool = False
) -> argparse.Namespace:
    return argparse.Namespace(compiled=compiled, interpreted=interpreted, quick=quick)


def test_by_default_it_builds_and_measures_what_the_image_runs() -> None:
    assert rebuild_compiled(flags(), running=INTERPRETED, missing=None)


def test_without_a_compiler_or_mypy_it_measures_the_source() -> None:
    assert not rebuild_compiled(flags(), running=INTERPRETED, missing="a C compiler (cc)")


def test_asked_for_the_compiled_build_it_builds_even_when_something_is_missing() -> None:
    # rerun_compiled then says what is missing and exits 2, rather than measuring another build.
    assert rebuild_compiled(flags(compiled=True), running=INTERPRETED, missing="mypy")


@pytest.mark.parametrize(
    "given", [flags(interpreted=True), flags(quick=True)], ids=["--interpreted", "--quick"]
)
def test_the_source_as_it_is_with_interpreted_or_quick(given: argparse.Namespace) -> None:
    assert not rebuild_compiled(given, running=INTERPRETED, missing=None)


@pytest.mark.parametrize("given", [flags(), flags(compiled=True)], ids=["default", "--compiled"])
def test_a_process_already_on_the_compiled_build_measures_it(given: argparse.Namespace) -> None:
    assert not rebuild_compiled(given, running=COMPILED, missing=None)
