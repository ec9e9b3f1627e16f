"""The compiled build: ``MLGATE_COMPILE=1`` compiles ``policies`` and ``mutators`` with mypyc.

Everything else about the package is in pyproject.toml; without MLGATE_COMPILE this adds nothing.
mypyc turns each module of the two packages into a C extension from its type annotations (mypy
strict holds them already): the same code, about three times faster at deciding (README: the
compiled build). It needs a C compiler and mypy in the build environment:

    pip install setuptools mypy
    MLGATE_COMPILE=1 pip install --no-build-isolation .

Not for an editable install: an extension built next to its source would shadow later edits.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

COMPILED_PACKAGES = ("policies", "mutators")


def compiled_modules() -> list[str]:
    """The source files mypyc compiles: every module of the decision packages."""
    root = Path(__file__).parent
    return sorted(
        str(path.relative_to(root))
        for package in COMPILED_PACKAGES
        for path in (root / package).glob("*.py")
    )


def extensions() -> list[object]:
    if os.environ.get("MLGATE_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(compiled_modules(), opt_level="3"))


setup(ext_modules=extensions())
