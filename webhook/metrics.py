"""Prometheus metrics of the webhook, correct across gunicorn's several worker processes.

gunicorn runs several worker processes, and a scrape reaches only one of them, so counters
live in prometheus-client's multiprocess mode: each process writes its values to memory-mapped
files in ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` sums them with a ``MultiProcessCollector``.
The server calls ``enable_multiprocess(directory)`` in the master *before* workers fork, and
``mark_worker_dead(pid)`` from gunicorn's ``child_exit`` hook. Without that call (tests with
``falcon.testing``, ``mlgate`` run in one process) everything stays in the default registry.

The counters and the latency histogram that every request touches (requests, latency, rule
results, mutations) are counted in process memory first and added to the shared values about
once a second (``MetricsBuffer``).

The metric objects are created on first use, not at import: prometheus-client picks between
in-memory and file-backed values when a metric (or a labelled child) is created, so creating
them at import would freeze the choice before the server had a chance to set the directory.
"""

from __future__ import annotations

import atexit
import bisect
import functools
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from policies.results import CheckResult

log = logging.getLogger("mlgate.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a process adds the counts it gathered to the shared values: a scrape sees another
# worker's counts at most this late (Prometheus scrapes every 10-60 s).
FLUSH_INTERVAL = 1.0

# Admission latency is sub-millisecond in process and bounded by the API server's timeout
# (at most 30 s, 10 s by default), so the buckets span 0.5 ms to 10 s.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# The buckets of each histogram that ``MetricsBuffer.observe`` counts, by metric.
HISTOGRAM_BUCKETS: dict[str, tuple[float, ...]] = {"admission_duration": DURATION_BUCKETS}


@dataclass(frozen=True)
class _Metrics:
    admission_requests: Counter
    admission_duration: Histogram
    policy_results: Counter
    mutations: Counter
    policy_load_errors: Counter
    audit_dropped: Counter
    cert_expiry: Gauge


@functools.cache
def _get_metrics() -> _Metrics:
    metrics = _Metrics(
        admission_requests=Counter(
            "mlgate_admission_requests",
            "Admission requests answered, by webhook, operation, kind and decision.",
            ["webhook", "operation", "kind", "decision"],
        ),
        admission_duration=Histogram(
            "mlgate_admission_duration_seconds",
            "Time to answer one admission request, from parsed body to response.",
            ["webhook"],
            buckets=DURATION_BUCKETS,
        ),
        policy_results=Counter(
            "mlgate_policy_results",
            "Rule results: pass, skip, error, or fail/warn/audit for a failed rule by its action.",
            ["policy", "rule", "result"],
        ),
        mutations=Counter(
            "mlgate_mutations",
            "Objects changed, by mutator.",
            ["mutator"],
        ),
        policy_load_errors=Counter(
            "mlgate_policy_load_errors",
            "Policy files or policies that failed to load.",
        ),
        audit_dropped=Counter(
            "mlgate_audit_dropped",
            "Audit records lost (queue full or write failed after retries); must stay 0.",
        ),
        # NOTE: livemax: every worker loads the same certificate; a dead worker's value goes
        # away with it, and after a rotation the newest (latest expiry) wins.
        cert_expiry=Gauge(
            "mlgate_cert_expiry_timestamp_seconds",
            "Expiry of the serving certificate, as a Unix timestamp.",
            multiprocess_mode="livemax",
        ),
    )
    # Counters without labels only appear once touched; show the zeros so that an alert such as
    # ``mlgate_audit_dropped_total > 0`` has a series to watch from the start.
    metrics.policy_load_errors.inc(0)
    metrics.audit_dropped.inc(0)
    return metrics


def enable_multiprocess(directory: str | os.PathLike[str]) -> None:
    """Switch to file-backed values in ``directory``, emptied first; call before forking workers.

    Must run before any metric is used in this process: values created earlier stay in memory.
    """
    if _get_metrics.cache_info().currsize:
        raise RuntimeError("metrics were used before enable_multiprocess(); call it first")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    # Files left by a previous server would be summed into this one's counters.
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def is_multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def mark_worker_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (gunicorn ``child_exit``); its counters stay summed."""
    if is_multiprocess():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


@functools.lru_cache(maxsize=8192)
def _labelled(metric: str, *labels: str) -> Any:
    """The child of a metric for these label values, looked up once per process.

    NOTE: ``labels()`` checks the values and takes a lock on every call, and a validating
    request counts a dozen results (bench/); the children are the ones prometheus-client
    keeps itself, so values still go to this process's files after a fork.
    """
    return getattr(_get_metrics(), metric).labels(*labels)


class MetricsBuffer:
    """Counter increments and histogram observations gathered in process memory, added to the
    real metrics in one go.

    NOTE: in multiprocess mode each prometheus-client increment takes a lock shared by every
    value of the process, checks the process id with a system call and writes a memory-mapped
    file; a validating request counts a dozen rule results, and that was ~7% of a loaded
    worker's GIL time (py-spy); a histogram observation is two such increments (its sum and
    its bucket), ~6-10 us of a validating request's ~155 in process (bench/). Here an increment
    is a dict update; a thread of each process adds the totals every ``FLUSH_INTERVAL``, and
    ``render_metrics`` first adds its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[str, ...]], float] = {}
        # (metric, labels) -> [sum, then the count of each bucket, +Inf last]
        self._observed: dict[tuple[str, tuple[str, ...]], list[float]] = {}
        self._started = False
        os.register_at_fork(after_in_child=self._forget)

    def add(self, metric: str, *labels: tuple[str, ...]) -> None:
        """Count one for each of ``labels`` (label values of ``metric``)."""
        if not self._started:
            self._start()
        with self._lock:
            counts = self._counts  # flush() swaps it, under the lock
            for values in labels:
                key = (metric, values)
                counts[key] = counts.get(key, 0.0) + 1.0

    def observe(self, metric: str, labels: tuple[str, ...], amount: float) -> None:
        """Observe ``amount`` in the histogram ``metric`` (its buckets ``HISTOGRAM_BUCKETS``)."""
        if not self._started:
            self._start()
        bounds = HISTOGRAM_BUCKETS[metric]
        bucket = bisect.bisect_left(bounds, amount) + 1  # the first bound >= amount, after the sum
        with self._lock:
            key = (metric, labels)
            totals = self._observed.get(key)
            if totals is None:
                totals = self._observed[key] = [0.0] * (len(bounds) + 2)
            totals[0] += amount
            totals[bucket] += 1.0

    def flush(self) -> None:
        """Add what was gathered in this process to the counters and histograms."""
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for (metric, labels), amount in counts.items():
            _labelled(metric, *labels).inc(amount)
        for (metric, labels), totals in observed.items():
            add_observations(_labelled(metric, *labels), totals)

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(
            target=self._flush_every_interval, name="mlgate-metrics", daemon=True
        ).start()
        atexit.register(self.flush)

    def _forget(self) -> None:
        """In a forked child: the parent's pending counts are the parent's, its thread is gone."""
        self._lock = threading.Lock()
        self._counts = {}
        self._observed = {}
        self._started = False

    def _flush_every_interval(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL)
            try:
                self.flush()
            except Exception:  # a bug here must not stop the counting for good
                log.exception("cannot add the gathered counts to the metrics")


def add_observations(histogram: Histogram, totals: list[float]) -> None:
    """Add to a (labelled) histogram the observations whose ``totals`` are their sum, then
    their count in each bucket (+Inf last), as ``observe`` would have one by one.

    NOTE: prometheus-client has no call that adds several observations at once, so this adds
    to the histogram's own values: its sum, and one count per bucket (``observe`` adds one to
    the bucket of the first bound at or above the amount; the exposition makes them
    cumulative). tests/audit/test_metrics.py checks that the result is what observing each
    amount gives, so a prometheus-client that changed this would fail there.
    """
    histogram._sum.inc(totals[0])
    for value, count in zip(histogram._buckets, totals[1:], strict=True):
        if count:
            value.inc(count)


_buffer = MetricsBuffer()


def flush() -> None:
    """Add the counts this process gathered to the counters (at exit, before a scrape)."""
    _buffer.flush()


def observe_admission(
    *, webhook: str, operation: str, kind: str, decision: str, seconds: float
) -> None:
    """Count one answered request; ``decision`` such as ``allow``, ``deny``, ``patch``."""
    _buffer.add("admission_requests", (webhook, operation, kind, decision))
    _buffer.observe("admission_duration", (webhook,), seconds)


def describe_result(result: CheckResult) -> str:
    """The ``result`` label: the status, except that a failed rule is named by its action."""
    if result.status == "fail":
        return "fail" if result.action == "deny" else result.action
    return result.status


def count_policy_results(results: Iterable[CheckResult]) -> None:
    _buffer.add("policy_results", *((r.policy, r.rule, describe_result(r)) for r in results))


def count_mutations(mutators: Iterable[str]) -> None:
    """Count the mutators that changed an object (by name, e.g. ``gpu-scheduling``)."""
    _buffer.add("mutations", *((mutator,) for mutator in mutators))


def count_policy_load_error(count: int = 1) -> None:
    _get_metrics().policy_load_errors.inc(count)


def count_audit_dropped(count: int = 1) -> None:
    _get_metrics().audit_dropped.inc(count)


def set_cert_expiry(timestamp: float) -> None:
    _get_metrics().cert_expiry.set(timestamp)


def render_metrics() -> tuple[str, bytes]:
    """The exposition for ``/metrics``: every worker's values in multiprocess mode, else ours.

    Another worker's latest counts appear within ``FLUSH_INTERVAL``.
    """
    _get_metrics()
    flush()
    if is_multiprocess():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return CONTENT_TYPE_LATEST, generate_latest(registry)
    return CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
