"""The benchmark harness runs end to end in its tiny mode, so that it cannot rot.

No timing is asserted: only that every case was measured, answered without errors, and that
every table and target is reported.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run import count_dropped_records
from tests.audit.records import make_record
from webhook.audit.store import drop_records
from webhook.jsonlog import JsonLogFormatter

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    figures = tmp_path_factory.mktemp("bench") / "figures.json"
    command = [sys.executable, "-m", "bench", "--quick", "--rounds", "2", "--client", "python"]
    done = subprocess.run(
        [*command, "--json", str(figures)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads(figures.read_text())


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "heading",
    [
        pytest.param("| endpoint | connections | baseline req/s | mlgate req/s", id="cases"),
        pytest.param("| endpoint | connections | mlgate handler p50 / p99 ms", id="handler"),
        pytest.param("| target | measured | met |", id="targets"),
        pytest.param("| stage (in process, default policies)", id="stages"),
        pytest.param("| loaded policies |", id="policies"),
        pytest.param("| process | resident memory of each (MB) |", id="memory"),
    ],
)
def test_quick_run_prints_every_table(quick_run: tuple[str, dict[str, Any]], heading: str) -> None:
    output, _ = quick_run
    assert heading in output


@pytest.mark.timeout(300)
def test_quick_run_measures_every_case_without_errors(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    _, figures = quick_run
    cases = figures["cases"]
    assert {(c["mix"], c["mode"]["name"]) for c in cases} == {
        (mix, mode)
        for mix in ("mutate", "validate", "validate-audited")
        for mode in (
            "keep-alive, 1 connection",
            "keep-alive, 16 connections",
            "new connection per request, 16 at once",
        )
    }
    for case in cases:  # the 16-connection cases in rounds, the others once
        rounds = 2 if case["mode"]["name"] == "keep-alive, 16 connections" else 0
        assert len(case["round_ratios"]) == rounds
        assert case["ratio"] == min(case["round_ratios"], default=case["ratio"])
    results = [r for c in cases for r in (c["baseline"], c["mlgate"])]
    results += list(figures["default_tls"].values())
    results += [r for by_webhook in figures["policies"].values() for r in by_webhook.values()]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in results), results
    assert len(figures["targets"]) == 13  # 3 per mix, 2 with 100 policies, memory, audit
    kept = next(t for t in figures["targets"] if t["name"].startswith("every audit record"))
    assert kept["met"], kept  # no run is faster for losing records
    assert sorted(figures["policies"]) == ["1", "10", "100"]


@pytest.mark.timeout(300)
def test_quick_run_profiles_each_stage(quick_run: tuple[str, dict[str, Any]]) -> None:
    _, figures = quick_run
    stages = {s["stage"]: s["micros"] for s in figures["stages"]}
    assert stages["mutators (copy + apply_all)"]["mutate"] > 0
    assert stages["checks (evaluate)"]["validate"] > 0
    assert stages["audit database insert (writer process, CPU)"]["validate-audited"] > 0
    assert stages["= whole falcon handler (WSGI)"]["mutate"] > 0
    memory = dict(figures["memory_mb"])
    assert len(memory.pop("mlgate's audit writer process")) == 1
    assert all(len(sizes) == 2 and min(sizes) > 0 for sizes in memory.values())


@pytest.mark.timeout(300)
def test_quick_run_reads_mlgates_own_latency_from_its_decision_lines(
    quick_run: tuple[str, dict[str, Any]],
) -> None:
    _, figures = quick_run
    for case in figures["cases"]:
        mlgate, baseline = case["mlgate"], case["baseline"]
        assert 0 < mlgate["handler_p50_ms"] <= mlgate["handler_p99_ms"]
        assert mlgate["handler_p50_ms"] < mlgate["p50_ms"]  # the client waits for more
        assert baseline["handler_p50_ms"] is None  # the baseline logs no decisions


def test_dropped_records_are_counted_from_the_servers_json_log(tmp_path: Path) -> None:
    log_file = tmp_path / "mlgate.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger("mlgate.audit")
    logger.addHandler(handler)
    try:
        drop_records([make_record(1), make_record(2)], reason="audit channel backlog full")
        drop_records([make_record(3)], reason="audit channel backlog full")
        logger.error("a line about audit records that dropped nothing")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert count_dropped_records(log_file) == 3
