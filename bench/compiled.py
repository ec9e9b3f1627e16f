"""Measuring the compiled build: ``python -m bench --compiled`` (README: the compiled build).

``build_compiled_site`` builds mlgate's wheel with ``MLGATE_COMPILE=1`` (setup.py: ``policies``
and ``mutators`` compiled by mypyc) from a copy of this checkout and unpacks it into a folder,
as pip would install it. ``rerun_compiled`` runs a benchmark command again with that folder
ahead of the checkout on the path: the servers it starts and its in-process stages then run the
compiled decision code, the rest of the checkout (the benchmark, its bodies) as it is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import mutators.pipeline
import policies.engine
from bench.bodies import ROOT

COMPILED_PACKAGES = ("policies", "mutators")
_SOURCES = ("webhook", "policies", "mutators", "certs")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.so")
# What the build imports, by the package that brings it (both are in the test extras).
BUILD_MODULES = {"mypy": "mypyc", "setuptools": "setuptools"}


def c_compiler() -> str | None:
    """The C compiler this Python builds extensions with, if the machine has it."""
    command = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(command)


def missing_for_build() -> str | None:
    """What this machine lacks to make the compiled build, or None when it can make it."""
    missing = []
    if c_compiler() is None:
        missing.append("a C compiler (cc)")
    absent = [
        package
        for package, module in BUILD_MODULES.items()
        if importlib.util.find_spec(module) is None
    ]
    if absent:
        missing.append(f"{' and '.join(absent)} (pip install -e '.[test]')")
    return " and ".join(missing) or None


def build_compiled_site(workdir: Path) -> Path:
    """``workdir/site``: the compiled wheel of this checkout, unpacked. Takes about a minute.

    Raises RuntimeError when a package's module was not compiled (each ``.py`` of the compiled
    packages has its extension beside it, which Python imports first).
    """
    source, wheels, site = workdir / "source", workdir / "wheel", workdir / "site"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in _SOURCES:
        shutil.copytree(ROOT / package, source / package, ignore=_IGNORED)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(wheels), str(source),
        ],
        env={**os.environ, "MLGATE_COMPILE": "1"},
        check=True,
        timeout=900,
    )  # fmt: skip
    (wheel,) = wheels.glob("mlgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    missing = [str(path.relative_to(site)) for path in interpreted_modules(site)]
    if missing:
        raise RuntimeError(f"not compiled: {', '.join(missing)}")
    return site


def interpreted_modules(site: Path) -> list[Path]:
    """The modules of the compiled packages under ``site`` that have no extension beside them."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    sources = sorted(path for name in COMPILED_PACKAGES for path in (site / name).glob("*.py"))
    return [path for path in sources if not path.with_name(path.stem + suffix).exists()]


def rerun_compiled(module: str, argv: Sequence[str]) -> int:
    """Run ``python -m module argv`` again on the compiled build; its exit status.

    ``-P`` keeps the working directory (the checkout, with its interpreted sources) off the
    front of the path, so the compiled site comes first and the checkout after it.
    """
    missing = missing_for_build()
    if missing is not None:
        print(f"the compiled build needs {missing}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mlgate-compiled-") as temp:
        print("building the compiled build (mypyc, about a minute)...", file=sys.stderr)
        site = build_compiled_site(Path(temp))
        path = os.pathsep.join([str(site), str(ROOT)])
        done = subprocess.run(
            [sys.executable, "-P", "-m", module, *argv],
            env={**os.environ, "PYTHONPATH": path},
            check=False,
        )
        return done.returncode


def decision_build() -> str:
    """How ``policies`` and ``mutators`` run in this process: compiled or interpreted."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    modules = (policies.engine, mutators.pipeline)
    compiled = [module for module in modules if (module.__file__ or "").endswith(suffix)]
    if len(compiled) == len(modules):
        return "compiled with mypyc"
    return "partly compiled with mypyc" if compiled else "interpreted"
