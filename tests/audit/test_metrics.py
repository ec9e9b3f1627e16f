"""Prometheus metrics: in one process through the falcon app, and summed across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from falcon import testing
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from policies.results import CheckResult
from tests.audit.test_server_audit import POLICY, make_review, read_sample
from tests.harness import ROOT
from webhook import metrics
from webhook.app import create_app
from webhook.audit.database import AuditQuery, open_audit_database
from webhook.audit.store import open_audit_store
from webhook.settings import Settings


@pytest.mark.parametrize(
    ("result", "label"),
    [
        (CheckResult("p", "r", "pass", ""), "pass"),
        (CheckResult("p", "r", "skip", ""), "skip"),
        (CheckResult("p", "r", "error", "", action="deny"), "error"),
        (CheckResult("p", "r", "fail", "", action="deny"), "fail"),
        (CheckResult("p", "r", "fail", "", action="warn"), "warn"),
        (CheckResult("p", "r", "fail", "", action="audit"), "audit"),
    ],
    ids=["pass", "skip", "error", "denied", "warned", "audited"],
)
def test_a_rule_result_is_labelled_by_status_or_by_the_action_of_a_failure(
    result: CheckResult, label: str
) -> None:
    assert metrics.describe_result(result) == label


def scrape(client: testing.TestClient) -> str:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_metrics_count_real_requests_through_the_app(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "locked-down.yaml").write_text(POLICY)
    store = open_audit_store(tmp_path / "audit.db", json_log=False)
    app = create_app(Settings(policies_dir=policies, watch_interval=0), audit=store)
    client = testing.TestClient(app)
    before = scrape(client)
    for number in range(7):
        response = client.simulate_post(
            "/validate",
            body=make_review(f"uid-{number}"),
            headers={"Content-Type": "application/json"},
        )
        assert response.json["response"]["allowed"] is False
    client.simulate_post("/validate", body=b"{", headers={"Content-Type": "application/json"})
    after = scrape(client)
    store.close()

    def delta(name: str, **labels: str) -> float:
        return read_sample(after, name, **labels) - read_sample(before, name, **labels)

    assert (
        delta(
            "mlgate_admission_requests_total",
            webhook="validate",
            operation="CREATE",
            kind="Deployment",
            decision="deny",
        )
        == 7
    )
    assert delta("mlgate_admission_requests_total", webhook="validate", decision="error") == 1
    assert delta("mlgate_admission_duration_seconds_count", webhook="validate") == 8
    assert (
        delta(
            "mlgate_policy_results_total",
            policy="locked-down",
            rule="labels.required",
            result="fail",
        )
        == 7
    )
    assert delta("mlgate_audit_dropped_total") == 0
    database = open_audit_database(tmp_path / "audit.db")
    assert database.count(AuditQuery(namespace="locked-down")) == 7
    database.close()


def test_dropped_audit_records_show_on_metrics() -> None:
    before = read_sample(metrics.render_metrics()[1].decode(), "mlgate_audit_dropped_total")
    metrics.count_audit_dropped(3)
    after = read_sample(metrics.render_metrics()[1].decode(), "mlgate_audit_dropped_total")
    assert after - before == 3


def run_script(script: str, *args: str) -> str:
    """Run ``script`` in a fresh Python (no metrics directory inherited); its stdout."""
    env = {k: v for k, v in os.environ.items() if k != metrics.MULTIPROC_ENV}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    return result.stdout


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from webhook import metrics

    metrics.enable_multiprocess(sys.argv[1])
    metrics.set_cert_expiry(1000.0)  # the master
    children = []
    for number in range(3):
        pid = os.fork()
        if pid == 0:
            for _ in range(number + 1):
                metrics.observe_admission(webhook="validate", operation="CREATE",
                                          kind="Pod", decision="deny", seconds=0.001)
            metrics.count_mutations(["resource-defaults"])
            metrics.count_policy_load_error()
            metrics.set_cert_expiry(2000.0 + number)
            metrics.flush()  # as the server's worker_exit hook does
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    # The last child stays "alive" for the gauge; the others are marked dead.
    for pid in children[:-1]:
        metrics.mark_worker_dead(pid)
    sys.stdout.write(metrics.render_metrics()[1].decode())
    """
)


def test_values_of_every_worker_process_are_summed(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"stale from an earlier run")
    text = run_script(MULTIPROCESS_SCRIPT, str(directory))
    assert read_sample(text, "mlgate_admission_requests_total", decision="deny") == 6
    assert read_sample(text, "mlgate_admission_duration_seconds_count", webhook="validate") == 6
    assert read_sample(text, "mlgate_mutations_total", mutator="resource-defaults") == 3
    assert read_sample(text, "mlgate_policy_load_errors_total") == 3
    assert read_sample(text, "mlgate_audit_dropped_total") == 0
    # livemax: dead workers' values are gone; the live child (2002) beats the master (1000).
    assert read_sample(text, "mlgate_cert_expiry_timestamp_seconds") == 2002.0


def test_multiprocess_mode_must_come_before_any_metric_is_used(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from webhook import metrics
        metrics.count_policy_load_error()
        try:
            metrics.enable_multiprocess(sys.argv[1])
        except RuntimeError as error:
            print("refused:", error)
        """
    )
    output = run_script(script, str(tmp_path))
    assert output.startswith("refused:")


FORK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from webhook import metrics

    metrics.enable_multiprocess(sys.argv[1])
    metrics.count_mutations(["gpu-scheduling"])  # gathered in the parent, not yet added
    pid = os.fork()
    if pid == 0:
        metrics.count_mutations(["gpu-scheduling"])
        metrics.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    sys.stdout.write(metrics.render_metrics()[1].decode())
    """
)


def test_a_forked_worker_does_not_add_its_parents_pending_counts(tmp_path: Path) -> None:
    output = run_script(FORK_SCRIPT, str(tmp_path / "metrics"))
    assert read_sample(output, "mlgate_mutations_total", mutator="gpu-scheduling") == 2


@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, *metrics.DURATION_BUCKETS, 10.000001, 60.0]),
            st.floats(min_value=0, max_value=100, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_buffered_latencies_show_as_observing_each_one_does(amounts: list[float]) -> None:
    observed, added = CollectorRegistry(), CollectorRegistry()
    histograms = [
        Histogram("d", "latency", ["webhook"], buckets=metrics.DURATION_BUCKETS, registry=r)
        for r in (observed, added)
    ]
    buffer = metrics.MetricsBuffer()
    buffer._started = True  # no flushing thread: this test adds the totals itself
    for amount in amounts:
        histograms[0].labels("validate").observe(amount)
        buffer.observe("admission_duration", ("validate",), amount)
    for (_metric, labels), totals in buffer._observed.items():
        metrics.add_observations(histograms[1].labels(*labels), totals)

    def exposition(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert exposition(added) == exposition(observed)
