"""The cost of each stage of an admission request, measured in process.

Each stage is the real function the server calls (``webhook.review``, ``webhook.admission``,
``mutators``, ``policies.engine``, the audit store, the metrics and the decision log), timed
with ``time.perf_counter`` over many iterations, one stage at a time, on inputs the previous
stages produced. The whole pipeline and the whole falcon handler are timed too, as a check that
the stages add up.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.bodies import MIXES, WEBHOOKS, Body, Webhook, load_bodies
from mutators import apply_all
from mutators.diff import make_patch
from policies.engine import evaluate, summarize
from policies.loader import default_policy_dir, load_policy_dir
from policies.matching import select_policies
from policies.model import PolicySet
from policies.workload import Workload
from webhook import metrics
from webhook.admission import Admitter, Outcome, build_audit_records, denial_message
from webhook.audit.channel import (
    AuditChannel,
    RequestAssembler,
    encode_submission,
    largest_message,
    make_socket_pair,
)
from webhook.audit.database import AuditDatabase, encode_requests, open_audit_database
from webhook.audit.record import AuditRecord, AuditSink
from webhook.audit.store import WriterSettings
from webhook.audit.wire import format_request_lines
from webhook.audit.writer import receive_records
from webhook.logwriter import BackgroundHandler
from webhook.review import AdmissionReviewWire, build_response, parse_review

ROUNDS = 5


@dataclass(frozen=True)
class StageCost:
    stage: str
    # By mix (bench.bodies.MIXES): the mean per request over its bodies; None: not on that path
    micros: dict[str, float | None]


class StaticPolicies:
    """A policy source holding one set (the server's ``PolicyStore`` without the watcher)."""

    def __init__(self, policy_set: PolicySet) -> None:
        self.current: PolicySet | None = policy_set


def time_per_call(
    function: Callable[[], object],
    *,
    iterations: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Microseconds per call: the median of a few rounds, each ``iterations`` calls."""
    rounds = []
    for _ in range(ROUNDS):
        start = clock()
        for _ in range(iterations):
            function()
        rounds.append((clock() - start) / iterations)
    return statistics.median(rounds) * 1e6


STAGES = (
    "parse review (orjson)",
    "context and lookups",
    "match policies",
    "mutators (copy + apply_all)",
    "patch (diff)",
    "checks (evaluate)",
    "build response",
    "serialise (orjson)",
    "audit records",
    "audit submit (encode + send)",
    "audit decode (writer process)",
    "audit JSON lines (writer process)",
    "audit database insert (writer process, CPU)",
    "metrics",
    "decision log line (fields, format, queue)",
    "= admit() + serialise",
)
# What a request with audit records pays beyond one without (its share of the writer too).
AUDIT_STAGES = (
    "audit submit (encode + send)",
    "audit decode (writer process)",
    "audit JSON lines (writer process)",
    "audit database insert (writer process, CPU)",
)


@dataclass(frozen=True)
class Pipeline:
    """What every stage needs: the policies in force and the server's collaborators."""

    policy_set: PolicySet
    admitter: Admitter
    audit: AuditSink
    database: AuditDatabase  # where the audit writer's inserts are timed
    iterations: int


def profile_stages(*, iterations: int, workdir: Path) -> list[StageCost]:
    """Per-request cost of each stage on the benchmark bodies, under the default policies."""
    ensure_multiprocess_metrics(workdir)
    policy_set = load_policy_dir(default_policy_dir())
    open_decision_log(workdir)
    audit = DiscardingChannel()
    pipeline = Pipeline(
        policy_set=policy_set,
        admitter=Admitter(policies=StaticPolicies(policy_set)),
        audit=audit,
        database=open_audit_database(workdir / "profile-inserts.db"),
        iterations=iterations,
    )
    costs: dict[str, dict[str, list[float]]] = {stage: {} for stage in STAGES}
    try:
        for mix in MIXES.values():
            for body in load_bodies(mix.name):
                for stage, micros in profile_body(pipeline, mix.webhook, body.data).items():
                    costs[stage].setdefault(mix.name, []).append(micros)
    finally:
        audit.close()
        pipeline.database.close()
    stages = [
        StageCost(stage, {mix: _mean(costs[stage].get(mix)) for mix in MIXES}) for stage in STAGES
    ]
    stages.append(StageCost("= whole falcon handler (WSGI)", profile_handler(iterations, workdir)))
    return stages


def profile_body(pipeline: Pipeline, webhook: Webhook, data: bytes) -> dict[str, float]:
    """Each stage of one request, timed on the output of the stages before it."""
    from webhook.decisions import decision_fields, log_decision

    costs: dict[str, float] = {}

    def add(stage: str, function: Callable[[], object]) -> None:
        costs[stage] = time_per_call(function, iterations=pipeline.iterations)

    policy_set, admitter = pipeline.policy_set, pipeline.admitter
    request = parse_review(data)
    add("parse review (orjson)", lambda: parse_review(data))
    quotas_needed = webhook == "validate"
    ctx = admitter._build_context(request, quotas_needed=quotas_needed)
    add(
        "context and lookups", lambda: admitter._build_context(request, quotas_needed=quotas_needed)
    )
    selected = select_policies(ctx, policy_set.policies)
    add("match policies", lambda: select_policies(ctx, policy_set.policies))
    obj = request.obj
    assert obj is not None
    review: AdmissionReviewWire
    if webhook == "mutate":
        outcome = apply_all(obj, selected)
        add("mutators (copy + apply_all)", lambda: apply_all(obj, selected))
        patch: list[Any] = list(make_patch(obj, outcome.obj))
        add("patch (diff)", lambda: make_patch(obj, outcome.obj))
        review = build_response(request.uid, patch=patch, warnings=outcome.warnings)
        add(
            "build response",
            lambda: build_response(request.uid, patch=patch, warnings=outcome.warnings),
        )
        result = Outcome(review, "patch", mutators=outcome.mutators)
    else:
        # As Admitter._validate: the workload is read once, for the checks and the records.
        workload = Workload.of(obj, namespace=ctx.namespace)
        results = evaluate(ctx, selected, workload=workload)

        def check() -> object:
            return summarize(
                evaluate(ctx, selected, workload=Workload.of(obj, namespace=ctx.namespace))
            )

        add("checks (evaluate)", check)
        verdict = summarize(results)

        def respond() -> AdmissionReviewWire:
            return build_response(
                request.uid,
                allowed=verdict.allowed,
                message=denial_message(ctx, verdict),
                warnings=[f"[{r.policy}] {r.message}" for r in verdict.warnings],
            )

        review = respond()
        add("build response", respond)
        records = build_audit_records(ctx, verdict, workload=workload)
        add("audit records", lambda: build_audit_records(ctx, verdict, workload=workload))
        if records:
            add("audit submit (encode + send)", lambda: pipeline.audit.submit(list(records)))
            (message,) = encode_submission(records)
            add("audit decode (writer process)", lambda: RequestAssembler().add(message))
            requests = RequestAssembler().add(message)
            add("audit JSON lines (writer process)", lambda: format_request_lines(requests))
            costs["audit database insert (writer process, CPU)"] = time_inserts(pipeline, records)
        else:  # nothing to record: the handler submits nothing, the writer has nothing to do
            for stage in AUDIT_STAGES:
                costs[stage] = 0.0
        decision = "allow" if verdict.allowed else "deny"
        result = Outcome(review, decision, results=tuple(results))
    add("serialise (orjson)", lambda: orjson.dumps(review))

    def observe() -> None:
        metrics.observe_admission(
            webhook=webhook, operation="CREATE", kind="Deployment",
            decision=result.decision, seconds=0.001,
        )  # fmt: skip
        if result.results:
            metrics.count_policy_results(result.results)
        if result.mutators:
            metrics.count_mutations(result.mutators)

    add("metrics", observe)
    # As AdmissionResource._record: the line's fields, the line made from them and queued, as
    # in the server (its writer thread writes the lines in batches meanwhile).
    add(
        "decision log line (fields, format, queue)",
        lambda: log_decision(decision_fields(webhook, request, result, 0.001)),
    )
    add(
        "= admit() + serialise",
        lambda: orjson.dumps(admitter.admit(webhook, parse_review(data)).review),
    )
    return costs


class DiscardingChannel(AuditChannel):
    """The workers' ``AuditChannel``, read by a forked process that throws the messages
    away: a request pays what it pays in the server (encode, one send), and no writer
    competes for this process's CPU.

    NOTE: the reader is the audit writer's own loop (``receive_records``), storing nothing: it
    sleeps ``linger``, then reads what the socket holds without waiting. A reader blocked on
    the socket is woken by every send, and the sender pays for that wake-up: the whole
    handler measured ~35 us more per validating request than in the server (bench/).
    """

    def __init__(self) -> None:
        receiver, sender = make_socket_pair()
        self._reader = os.fork()
        if self._reader == 0:  # pragma: no cover (the reader)
            size = largest_message(sender)
            sender.close()
            receive_records(receiver, lambda _batch: None, buffer_size=size)
            os._exit(0)  # the end of the stream: every sending end closed
        receiver.close()
        super().__init__(sender)

    def close(self) -> None:
        super().close()
        self._socket.close()  # the reader sees the end of the stream
        os.waitpid(self._reader, 0)


def time_inserts(pipeline: Pipeline, records: Sequence[AuditRecord]) -> float:
    """CPU microseconds per request of the writer's insert of ``records``, in full batches
    (``WriterSettings.batch_size`` records) into the pipeline's database, each request with a
    uid of its own (a uid already stored would be skipped, as a retry is).

    NOTE: full batches, as the writer process takes them at 16 connections (what comes in 50 ms
    is more than a batch there: ~135 requests of ~3.7 records); at one connection they hold
    ~50 requests, and a request's share of a transaction is then larger.

    NOTE: this thread's CPU time, not the clock: a checkpoint's fsync now and then waits for
    the disk without costing the server anything, and the audit store's own writer may still
    be busy with the submit stage's records.
    """
    batch = max(1, WriterSettings().batch_size // max(1, len(records)))  # requests
    calls = max(1, pipeline.iterations // batch)
    numbers = itertools.count()
    batches = iter(
        [
            encode_requests(
                dataclasses.replace(record, uid=f"{record.uid}-{next(numbers)}")
                for _ in range(batch)
                for record in records
            )
            for _ in range(calls * ROUNDS)
        ]
    )
    database = pipeline.database
    micros = time_per_call(
        lambda: database.insert_requests(next(batches)), iterations=calls, clock=time.thread_time
    )
    return micros / batch


def _mean(values: Sequence[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def profile_handler(iterations: int, workdir: Path) -> dict[str, float | None]:
    """The whole ``/mutate`` and ``/validate`` handlers: the falcon app called as gunicorn
    calls it (a WSGI environ, the body in a stream), with the workers' audit channel (its
    reader a process of its own), metrics, and the decision log on its writer thread, as in
    the server."""
    from webhook.app import create_app
    from webhook.settings import Settings

    audit = DiscardingChannel()
    decision_log = logging.getLogger("mlgate.decisions")
    try:
        app = create_app(Settings(watch_interval=0), audit=audit)
        totals: dict[str, float | None] = {}
        for mix in MIXES.values():
            per_body = [
                time_per_call(_wsgi_call(app, mix.webhook, body), iterations=iterations)
                for body in load_bodies(mix.name)
            ]
            totals[mix.name] = statistics.fmean(per_body)
        return totals
    finally:
        for handler in decision_log.handlers:
            handler.flush()
        audit.close()


def _wsgi_call(app: Any, webhook: Webhook, body: Body) -> Callable[[], object]:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/{webhook}",
        "QUERY_STRING": "timeout=5s",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body.data)),
        "wsgi.url_scheme": "https",
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses.append(status)

    sent = itertools.count()

    def call() -> object:
        data = body.stamp(next(sent))  # a uid of its own, as in the server runs
        answer = b"".join(app({**environ, "wsgi.input": io.BytesIO(data)}, start_response))
        if not statuses.pop().startswith("200"):
            raise RuntimeError(f"/{webhook} {body.name}: {answer!r}")
        return answer

    return call


def admit_micros(policy_set: PolicySet, *, iterations: int) -> dict[str, float]:
    """Parse, admit and serialise the bodies of each webhook's mix (``MIXES[webhook]``) under
    ``policy_set``, in microseconds."""
    admitter = Admitter(policies=StaticPolicies(policy_set))
    out: dict[str, float] = {}
    for webhook in WEBHOOKS:
        per_body = [
            time_per_call(_admitter_call(admitter, webhook, body.data), iterations=iterations)
            for body in load_bodies(webhook)
        ]
        out[webhook] = statistics.fmean(per_body)
    return out


def _admitter_call(admitter: Admitter, webhook: Webhook, data: bytes) -> Callable[[], object]:
    return lambda: orjson.dumps(admitter.admit(webhook, parse_review(data)).review)


def ensure_multiprocess_metrics(workdir: Path) -> None:
    """File-backed metrics, as in the server's workers (their cost is part of each request)."""
    if not metrics.is_multiprocess():
        directory = workdir / "metrics"
        directory.mkdir(exist_ok=True)
        metrics.enable_multiprocess(directory)


def open_decision_log(workdir: Path) -> None:
    """Send ``mlgate.decisions`` to a file in ``workdir`` as the server sends it to stdout
    (``webhook.server.build_decision_handler``: JSON lines, a ``BackgroundHandler`` over a
    stream)."""
    from webhook.jsonlog import JsonLogFormatter

    logger = logging.getLogger("mlgate.decisions")
    stream = logging.StreamHandler((workdir / "decisions.log").open("a", encoding="utf-8"))
    stream.setFormatter(JsonLogFormatter())
    logger.addHandler(BackgroundHandler(stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        for cost in profile_stages(iterations=int(os.environ.get("N", "300")), workdir=Path(tmp)):
            print(f"{cost.stage:32}", {k: round(v, 1) if v else v for k, v in cost.micros.items()})
