"""Kubernetes Events for denials, so ``kubectl get events -n NS`` shows what mlgate rejected.

The denied object was never created, so it cannot own the event. Like Gatekeeper's admission
events, the event lives in the object's namespace and its ``involvedObject`` names the object
(kind, name, namespace, no uid): ``kubectl get events -n NS`` then lists

    LAST SEEN   TYPE      REASON            OBJECT                            MESSAGE
    3s          Warning   PolicyViolation   deployment/recommendation-model   [images/...] ...

which says at a glance what was rejected and why. Only real denials get one: not warnings or
audits, and not dry runs (the webhook declares ``sideEffects: NoneOnDryRun``).

Events are sent off the request path by a thread, and rate-limited per namespace and name with
a token bucket, so a controller retrying a rejected object in a loop cannot flood the API
server; what the limit or a full queue drops is logged, never retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from webhook.audit.record import AuditRecord
from webhook.kube import KubeError, translate_error

log = logging.getLogger("mlgate.events")

REASON = "PolicyViolation"
COMPONENT = "mlgate"
# kubectl shows the message on one line: keep it readable (the API server allows far more).
MAX_MESSAGE = 1024
JsonObject = dict[str, Any]


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one token per event."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class EventLimiter:
    """A token bucket per key (namespace, name); the least recently used keys are forgotten."""

    def __init__(self, *, rate: float = 1 / 60, burst: int = 5, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def allow(self, key: tuple[str, str], *, now: float) -> bool:
        bucket = self.buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, float(self.burst), now)
        self.buckets[key] = bucket
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return bucket.take(now)


def format_time(time_: dt.datetime) -> str:
    return time_.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(time_: dt.datetime) -> str:
    return time_.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_event(record: AuditRecord, *, host: str = "") -> JsonObject:
    """The core/v1 Event for one denial (see the module docstring for where it lands)."""
    name = record.name or "unnamed"
    digest = hashlib.sha256(f"{record.uid}/{record.policy}/{record.rule}".encode()).hexdigest()[:16]
    message = f"[{record.policy}/{record.rule}] {record.operation} denied: {record.message}"
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            # <object>.<unique>, as kubelet and controllers name theirs; at most 253 characters.
            "name": f"{name[:200]}.{digest}",
            "namespace": record.namespace,
            "labels": {"app.kubernetes.io/managed-by": COMPONENT},
            "annotations": {
                "mlgate.io/policy": record.policy,
                "mlgate.io/rule": record.rule,
                "mlgate.io/user": record.username,
                "mlgate.io/request-uid": record.uid,
            },
        },
        "involvedObject": {
            "kind": record.kind,
            "name": name,
            "namespace": record.namespace,
        },
        "reason": REASON,
        "type": "Warning",
        "message": message,
        "source": {"component": COMPONENT, **({"host": host} if host else {})},
        "reportingComponent": COMPONENT,
        "reportingInstance": host or COMPONENT,
        "action": "Admit",
        "firstTimestamp": format_time(record.time),
        "lastTimestamp": format_time(record.time),
        "eventTime": format_micro_time(record.time),
        "count": 1,
    }


def select_denials(records: list[AuditRecord]) -> list[AuditRecord]:
    return [r for r in records if r.action == "deny" and not r.dry_run and r.namespace]


_STOP = object()


class EventRecorder:
    """An ``AuditSink`` that turns denials into Events, sent by a thread of this process."""

    def __init__(
        self,
        create_event: Callable[[str, JsonObject], object],
        *,
        limiter: EventLimiter | None = None,
        queue_size: int = 1000,
        close_timeout: float = 10.0,
        host: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.create_event = create_event
        self.limiter = limiter or EventLimiter()
        self.queue_size = queue_size
        self.close_timeout = close_timeout
        self.host = host
        self.clock = clock
        self._lock = threading.Lock()
        self._pid = 0
        self._queue: queue.Queue[JsonObject | object] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None

    def submit(self, records: list[AuditRecord]) -> None:
        denials = select_denials(records)
        if not denials:
            return
        if self._pid != os.getpid():
            self._start()
        now = self.clock()
        for record in denials:
            with self._lock:
                allowed = self.limiter.allow((record.namespace, record.name), now=now)
            if not allowed:
                log.debug("event for %s/%s rate-limited", record.namespace, record.name)
                continue
            try:
                self._queue.put_nowait(build_event(record, host=self.host))
            except queue.Full:
                log.warning("event queue full; no event for %s/%s", record.namespace, record.name)

    def close(self) -> None:
        with self._lock:
            thread = self._thread if self._pid == os.getpid() else None
            self._thread = None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(self.close_timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # After a fork: a queue and thread of our own (see webhook.audit.store).
            self._queue = queue.Queue(self.queue_size)
            self._thread = threading.Thread(target=self._run, name="mlgate-events", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            assert isinstance(event, dict)
            try:
                self._send(event)
            except KubeError as error:
                log.warning("cannot create event %s: %s", event["metadata"]["name"], error)

    def _send(self, event: JsonObject) -> None:
        try:
            self.create_event(event["metadata"]["namespace"], event)
        except Exception as error:
            raise translate_error(error) from error


def open_event_recorder(api_client: client.ApiClient, **options: Any) -> EventRecorder:
    """Events through the cluster's API client (needs RBAC: create events in watched NSs)."""
    core = client.CoreV1Api(api_client)

    def create_event(namespace: str, body: JsonObject) -> object:
        # NOTE: the client serialises a plain dict as it is; no need for its model classes.
        return core.create_namespaced_event(namespace, body, _request_timeout=10)  # type: ignore[arg-type]

    return EventRecorder(create_event, host=os.environ.get("HOSTNAME", ""), **options)
