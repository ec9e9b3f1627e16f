"""The falcon application: thin resources over ``webhook.admission``.

``create_app(settings, *, kube=None, audit=None)`` takes its collaborators, so tests pass real
or local ones without monkey-patching.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import falcon
import orjson

from webhook import metrics
from webhook.admission import Admitter, ClusterLookups, NotReadyError, Outcome, Webhook
from webhook.audit.record import AuditSink
from webhook.decisions import decision_fields, log_decision
from webhook.policystore import PolicyStore
from webhook.review import AdmissionRequest, ReviewError, parse_review
from webhook.settings import Settings

log = logging.getLogger("mlgate.admission")

JSON_TYPES = ("application/json",)


def _error(resp: falcon.Response, status: int, reason: str, **extra: Any) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    body = {"status": status, "error": falcon.code_to_http_status(status)[4:], "reason": reason}
    resp.data = orjson.dumps({**body, **extra})


class AdmissionResource:
    """``POST /mutate`` and ``POST /validate``: AdmissionReview in, AdmissionReview out."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        admitter: Admitter,
        audit: AuditSink | None,
        max_body_bytes: int,
    ) -> None:
        self.webhook = webhook
        self.admitter = admitter
        self.audit = audit
        self.max_body_bytes = max_body_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        start = time.perf_counter()
        request: AdmissionRequest | None = None
        try:
            body = self._read_body(req)
            request = parse_review(body)
            outcome = self.admitter.admit(self.webhook, request)
        except ReviewError as exc:
            log.warning(
                "rejected %s request from %s: HTTP %d: %s",
                self.webhook,
                req.remote_addr,
                exc.status,
                exc.reason,
            )
            _error(resp, exc.status, exc.reason, **({"uid": exc.uid} if exc.uid else {}))
            metrics.observe_admission(
                webhook=self.webhook,
                operation="",
                kind="",
                decision="error",
                seconds=time.perf_counter() - start,
            )
            return
        except NotReadyError as exc:
            log.error("cannot answer %s: %s", self.webhook, exc)
            _error(resp, 503, str(exc))
            return
        except Exception as exc:
            # NOTE: a bug must cost one request, never a worker: answer 500 with the reason.
            log.exception("failed to decide %s %s", self.webhook, request.uid if request else "")
            _error(resp, 500, f"internal error while deciding: {type(exc).__name__}: {exc}")
            return
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps(outcome.review)
        seconds = time.perf_counter() - start
        self._record(request, outcome, seconds, timeout=req.get_param("timeout") or "")

    def _read_body(self, req: falcon.Request) -> bytes:
        content_type = (req.content_type or "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise ReviewError(
                415, f"Content-Type must be application/json, got {req.content_type or 'none'!r}"
            )
        length = req.content_length
        if length is not None and length > self.max_body_bytes:
            self._discard_body(req)
            raise ReviewError(
                413, f"body of {length} bytes is over the limit of {self.max_body_bytes} bytes"
            )
        body: bytes = req.bounded_stream.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            self._discard_body(req)
            raise ReviewError(413, f"body is over the limit of {self.max_body_bytes} bytes")
        if not body:
            raise ReviewError(400, "body is empty; expected an AdmissionReview")
        return body

    def _discard_body(self, req: falcon.Request) -> None:
        """Read and drop an over-limit body, up to a bound, so the client gets its 413.

        NOTE: answering before the body is read makes gunicorn close the connection while the
        client is still sending, and many clients then report a broken pipe, not the 413.
        Beyond the bound the connection is closed anyway.
        """
        remaining = 4 * self.max_body_bytes
        while remaining > 0:
            chunk = req.bounded_stream.read(min(remaining, 256 * 1024))
            if not chunk:
                return
            remaining -= len(chunk)

    def _record(
        self, request: AdmissionRequest, outcome: Outcome, seconds: float, *, timeout: str
    ) -> None:
        if outcome.records and self.audit is not None:
            self.audit.submit(list(outcome.records))
        metrics.observe_admission(
            webhook=self.webhook,
            operation=request.operation,
            kind=request.kind,
            decision=outcome.decision,
            seconds=seconds,
        )
        if outcome.results:
            metrics.count_policy_results(outcome.results)
        if outcome.mutators:
            metrics.count_mutations(outcome.mutators)
        fields = decision_fields(self.webhook, request, outcome, seconds)
        if timeout:
            fields["timeout"] = timeout  # the API server gives up after this (timeoutSeconds)
        log_decision(fields)


class HealthResource:
    """``GET /healthz``: the process is alive and answering."""

    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class ReadyResource:
    """``GET /readyz``: ready once a policy set and the certificate are loaded, and the cluster
    caches synced (or their grace period passed).

    NOTE: an unreachable API server must not make every replica unready for good: with
    ``failurePolicy: Fail`` that would block every deployment, while the checks that need the
    cluster already have their own failure action.
    """

    def __init__(
        self, store: PolicyStore, settings: Settings, *, kube: ClusterLookups | None
    ) -> None:
        self.store = store
        self.settings = settings
        self.wait_synced = getattr(kube, "wait_synced", None)
        self.started = time.monotonic()

    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        problems = []
        state = self.store.state
        if state.policy_set is None:
            problems.append(f"no valid policy set loaded: {state.error or 'not loaded yet'}")
        for path in (self.settings.cert_file, self.settings.key_file):
            if path is not None and not path.is_file():
                problems.append(f"certificate file {path} is missing")
        in_grace = time.monotonic() - self.started < self.settings.cluster_sync_grace
        if self.wait_synced is not None and in_grace and not self.wait_synced(0):
            problems.append("cluster caches (ResourceQuotas, namespaces, workloads) not synced")
        body: dict[str, Any] = {
            "status": "ready" if not problems else "not ready",
            "policies": [p.name for p in state.policy_set.policies] if state.policy_set else [],
            "generation": state.generation,
        }
        if state.error:
            body["policy_error"] = state.error
        if problems:
            body["problems"] = problems
            resp.status = falcon.HTTP_503
        resp.media = body


class MetricsResource:
    """``GET /metrics``: Prometheus text format, every worker's values summed."""

    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        content_type, data = metrics.render_metrics()
        resp.content_type = content_type
        resp.data = data


def _handle_unexpected(
    req: falcon.Request, resp: falcon.Response, exc: Exception, _params: dict[str, Any]
) -> None:
    if isinstance(exc, falcon.HTTPError):
        _error(resp, exc.status_code, exc.description or exc.title or "")
        return
    log.exception("unhandled error on %s %s", req.method, req.path)
    _error(resp, 500, f"internal error: {type(exc).__name__}")


def create_app(
    settings: Settings,
    *,
    kube: ClusterLookups | None = None,
    audit: AuditSink | None = None,
    store: PolicyStore | None = None,
) -> falcon.App[falcon.Request, falcon.Response]:
    """The WSGI app. Without ``store`` it loads ``settings.policies_dir`` and watches it."""
    if store is None:
        store = PolicyStore(
            settings.policies_dir,
            on_error=lambda _exc: metrics.count_policy_load_error(),
        )
        store.reload_if_changed()
        if settings.watch_interval > 0:
            store.start_watching(settings.watch_interval)
    admitter = Admitter(policies=store, cluster=kube, own_namespace=settings.own_namespace)
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_error_handler(Exception, _handle_unexpected)
    webhooks: tuple[Webhook, ...] = ("mutate", "validate")
    for webhook in webhooks:
        resource = AdmissionResource(
            webhook,
            admitter=admitter,
            audit=audit,
            max_body_bytes=settings.max_body_bytes,
        )
        app.add_route(f"/{webhook}", resource)
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(store, settings, kube=kube))
    app.add_route("/metrics", MetricsResource())
    return app
