"""``python -m bench.compare``: two versions of mlgate measured side by side."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bodies import ROOT as BENCH_ROOT
from bench.compare import Figures, format_report
from bench.servers import python_path

ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_report_gives_each_round_the_medians_and_the_ratios() -> None:
    theirs = Figures("HEAD~1", rps=[1000.0, 1200.0, 1100.0], cpu_us=[500.0, 480.0, 520.0])
    ours = Figures("this checkout", rps=[1210.0, 1150.0, 1320.0], cpu_us=[450.0, 470.0, 400.0])

    report = format_report(ours, theirs, case="/validate, 16 connections kept alive")

    assert "| HEAD~1 | 1,000, 1,200, 1,100 | 1,100 | 500 |" in report
    assert "| this checkout | 1,210, 1,150, 1,320 | 1,210 | 450 |" in report
    assert report.endswith(
        "this checkout / HEAD~1: 1.100x requests/s, 0.900x CPU per request; faster in 2 of 3 rounds"
    )


def test_it_measures_another_revision_from_a_worktree_it_removes_after(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "bench.compare", "HEAD",
        "--rounds", "1", "--seconds", "0.5", "--connections", "2", "--client", "python",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "/validate, 2 connections kept alive; 1 interleaved rounds" in done.stdout
    assert "| HEAD |" in done.stdout
    assert "| this checkout, interpreted |" in done.stdout
    worktrees = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "mlgate-compare-" not in worktrees


def test_servers_of_this_checkout_keep_what_is_ahead_of_it_on_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert python_path(BENCH_ROOT) == str(BENCH_ROOT)

    monkeypatch.setenv("PYTHONPATH", "/compiled/site")  # what --compiled runs the benchmark with
    assert python_path(BENCH_ROOT) == os.pathsep.join(["/compiled/site", str(BENCH_ROOT)])
    assert python_path(tmp_path) == str(tmp_path)  # another revision: its own code only
