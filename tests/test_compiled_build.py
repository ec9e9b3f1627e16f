"""The compiled build decides exactly as the interpreted one.

``MLGATE_COMPILE=1`` (setup.py) builds ``policies`` and ``mutators`` with mypyc, as the image
does (manifests/Dockerfile). mypyc checks the annotations at run time and stores a value by its
declared type (an int annotated ``float`` becomes a float): code that is right interpreted can
answer differently compiled. So this builds that wheel and runs the decision tests against it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bench.compiled import build_compiled_site, c_compiler

ROOT = Path(__file__).resolve().parent.parent
DECISION_TESTS = ("tests/policies", "tests/mutators", "tests/validate")

pytestmark = pytest.mark.skipif(
    c_compiler() is None, reason="the compiled build needs a C compiler"
)


def test_the_decision_tests_pass_against_the_compiled_build(tmp_path: Path) -> None:
    site = build_compiled_site(tmp_path)  # raises unless every module has its extension
    shutil.copytree(ROOT / "tests", site / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", site / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(site)}

    which = subprocess.run(
        [sys.executable, "-c", "import mutators.pipeline as m, policies.engine as p; "
         "print(m.__file__); print(p.__file__)"],
        cwd=site, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    assert which.stdout.split() == [
        str(site / "mutators" / f"pipeline{suffix}"),
        str(site / "policies" / f"engine{suffix}"),
    ]

    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *DECISION_TESTS],
        cwd=site, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
