"""Kubernetes Events for denials: their shape, the rate limit, and sending them for real.

No kube-apiserver binary is available to the suite, so the sending test runs the real
``kubernetes`` client against a small HTTP server that answers ``POST .../events`` as the API
server does (201 with the object, or a Status with an error code) and keeps what it received.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from tests.audit.records import make_record
from tests.k8s_schema import validate_k8s
from webhook.events import EventLimiter, TokenBucket, build_event, open_event_recorder

# NOTE: the first event imports the kubernetes client's API classes (seconds on a loaded
# machine); close() waits this long for the queue to drain, so a slow CI run does not lose them.
CLOSE_TIMEOUT = 60.0


@pytest.mark.parametrize(
    "record",
    [
        make_record(1),
        make_record(2, kind="Pod", name="churn-model", operation="UPDATE"),
        make_record(3, name="", kind="Job"),
        make_record(4, name="m" * 253, message="x" * 5000),
        make_record(5, message='<b>quotes " and\nnewlines</b>'),
    ],
    ids=[
        "deployment",
        "pod-update",
        "generate-name-without-name",
        "longest-name-and-message",
        "odd-characters",
    ],
)
def test_the_event_passes_the_official_schema_and_names_the_object(record: Any) -> None:
    event = build_event(record, host="mlgate-7d9f-abcde")
    validate_k8s(event)
    assert event["metadata"]["namespace"] == record.namespace
    assert event["involvedObject"]["namespace"] == record.namespace
    assert event["involvedObject"]["kind"] == record.kind
    assert event["reason"] == "PolicyViolation"
    assert event["type"] == "Warning"
    assert len(event["metadata"]["name"]) <= 253
    assert len(event["message"]) <= 1024
    assert f"[{record.policy}/{record.rule}]" in event["message"]


def test_events_of_different_rules_of_one_request_get_different_names() -> None:
    first = build_event(make_record(1))
    second = build_event(make_record(1, rule="images.allowed-repository"))
    assert first["metadata"]["name"] != second["metadata"]["name"]


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([0, 0, 0, 0], [True, True, True, False]),
        ([0, 0, 0, 1, 2], [True, True, True, True, True]),
        ([0, 0, 0, 0.5, 0.9], [True, True, True, False, False]),
        ([0, 0, 0, 0, 100], [True, True, True, False, True]),
    ],
    ids=["burst-then-limited", "refilled-at-rate", "partial-refill", "refill-caps-at-burst"],
)
def test_the_token_bucket_allows_a_burst_then_the_rate(
    times: list[float], expected: list[bool]
) -> None:
    bucket = TokenBucket(rate=1.0, burst=3, tokens=3, updated=0)
    assert [bucket.take(t) for t in times] == expected


def test_the_limiter_keeps_a_bucket_per_object_and_forgets_the_oldest() -> None:
    limiter = EventLimiter(rate=0.0, burst=1, max_keys=2)
    assert limiter.allow(("ns", "a"), now=0)
    assert not limiter.allow(("ns", "a"), now=1)
    assert limiter.allow(("ns", "b"), now=1)
    assert limiter.allow(("other", "a"), now=1)  # a different namespace, a different bucket
    # ("ns", "a") was the least recently used of three: forgotten, so allowed again.
    assert limiter.allow(("ns", "a"), now=2)


class EventsApi:
    """Answers ``POST /api/v1/namespaces/NS/events`` and keeps the bodies."""

    def __init__(self, *, status: int = 201) -> None:
        self.status = status
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                # Recorded before answering: once the client has its answer, the test may look.
                with api.lock:
                    api.received.append((self.path, body))
                if api.status == 201:
                    reply = body
                else:
                    reply = {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "reason": "Forbidden",
                        "code": api.status,
                        "message": "events is forbidden",
                    }
                data = json.dumps(reply).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def events_api() -> Iterator[EventsApi]:
    api = EventsApi()
    yield api
    api.server.shutdown()


def api_client_for(url: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


def test_denials_become_events_in_their_namespace(events_api: EventsApi) -> None:
    recorder = open_event_recorder(api_client_for(events_api.url), close_timeout=CLOSE_TIMEOUT)
    recorder.submit(
        [
            make_record(1),
            make_record(2, action="warn"),
            make_record(3, dry_run=True),
            make_record(4, namespace="research"),
        ]
    )
    recorder.close()
    paths = [path for path, _ in events_api.received]
    assert sorted(paths) == [
        "/api/v1/namespaces/ml-serving/events",
        "/api/v1/namespaces/research/events",
    ]
    bodies = {body["involvedObject"]["name"]: body for _, body in events_api.received}
    assert bodies["model-1"]["reason"] == "PolicyViolation"
    assert bodies["model-1"]["involvedObject"] == {
        "kind": "Deployment",
        "name": "model-1",
        "namespace": "ml-serving",
    }


def test_an_object_denied_in_a_loop_gets_a_burst_of_events_then_none(
    events_api: EventsApi,
) -> None:
    recorder = open_event_recorder(
        api_client_for(events_api.url),
        limiter=EventLimiter(rate=0.0, burst=3),
        close_timeout=CLOSE_TIMEOUT,
    )
    for _ in range(10):
        recorder.submit([make_record(1)])
        recorder.submit([make_record(2)])
    recorder.close()
    names = [body["involvedObject"]["name"] for _, body in events_api.received]
    assert sorted(names) == ["model-1"] * 3 + ["model-2"] * 3


def test_a_refused_event_is_logged_and_the_recorder_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = EventsApi(status=403)
    try:
        recorder = open_event_recorder(api_client_for(api.url), close_timeout=CLOSE_TIMEOUT)
        with caplog.at_level("WARNING", logger="mlgate.events"):
            recorder.submit([make_record(1)])
            recorder.submit([make_record(2)])
            recorder.close()
    finally:
        api.server.shutdown()
    assert len(api.received) == 2
    assert sum("cannot create event" in r.getMessage() for r in caplog.records) == 2
