"""The live cluster view: watch-backed caches of what decisions read from the Kubernetes API.

Admission must never wait on one API call per request. Each resource mlgate reads
(ResourceQuotas, Namespaces, and the workloads behind ``scale`` requests) has an informer: a
thread that lists the collection, then watches it from the list's resourceVersion, lists again
when the API server answers 410 Gone, and reconnects with exponential backoff when the
connection breaks. Lookups read the in-memory store under a lock.

A cache that has not synced yet, or whose watch has been broken for longer than ``staleness``
seconds, answers with a ``LookupFailure`` that says why; the policy's failure action decides
what that means (``policies.quota``). Within the staleness bound a reconnecting informer keeps
serving what it has: a watch that drops every few minutes is normal.

``kubernetes.client.ApiException`` and the transport's errors are wrapped once, here, into
``KubeError`` and its families (httpx's ``_exceptions.py`` is the model).

Threads do not survive ``fork``: each gunicorn worker builds its own view after forking.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from policies.context import LookupFailure, QuotaStatus

log = logging.getLogger("mlgate.kube")

JsonObject = dict[str, Any]


# --- errors -------------------------------------------------------------------------------------


class KubeError(Exception):
    """A failure talking to the Kubernetes API."""


class KubeConfigError(KubeError):
    """The kubeconfig or in-cluster configuration could not be loaded."""


class KubeUnavailableError(KubeError):
    """The API server could not be reached, or the connection broke."""


class KubeStatusError(KubeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}".strip())
        self.status = status
        self.reason = reason


class KubeGoneError(KubeStatusError):
    """410 Gone: the watched resourceVersion is too old; list again."""


class KubeNotFoundError(KubeStatusError):
    """404: the API server does not serve this resource (e.g. no Argo Rollout CRD)."""


class KubeForbiddenError(KubeStatusError):
    """401 or 403: mlgate's credentials or RBAC do not allow the read."""


def translate_error(error: Exception) -> KubeError:
    """Our error for an exception raised by the ``kubernetes`` client or its transport."""
    if isinstance(error, KubeError):
        return error
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        reason = str(error.reason or "").strip()
        if status == 0:
            return KubeUnavailableError(reason or "no response")
        family: type[KubeStatusError] = KubeStatusError
        if status == 410:
            family = KubeGoneError
        elif status == 404:
            family = KubeNotFoundError
        elif status in (401, 403):
            family = KubeForbiddenError
        return family(status, reason)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError):
        return KubeUnavailableError(f"{type(error).__name__}: {error}")
    if isinstance(error, ValueError):  # a body that is not JSON
        return KubeUnavailableError(f"unreadable response: {error}")
    return KubeError(f"{type(error).__name__}: {error}")


# --- the view -----------------------------------------------------------------------------------


class ClusterView(Protocol):
    """What the webhook reads from the cluster; every call answers from memory."""

    def namespace_labels(self, namespace: str) -> dict[str, str] | None: ...

    def resource_quotas(self, namespace: str) -> tuple[QuotaStatus, ...] | LookupFailure: ...

    def workload(
        self, *, group: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | LookupFailure: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Collection:
    """One watched collection: how to list/watch it and what each item becomes in the store."""

    what: str  # "ResourceQuotas", "deployments.apps"
    kind: str
    api_version: str
    list_call: Callable[..., Any]
    convert: Callable[[JsonObject], Any]


@dataclass(frozen=True)
class CacheHealth:
    synced: bool
    broken_since: float | None  # monotonic time the watch broke, None when healthy
    last_error: str


class Informer:
    """A list-then-watch cache of one collection, kept fresh by a daemon thread.

    The store maps namespace -> name -> converted item ("" is the namespace of cluster-scoped
    objects).
    """

    def __init__(
        self,
        collection: Collection,
        *,
        staleness: float,
        watch_timeout: int,
        request_timeout: float,
        backoff: tuple[float, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collection = collection
        self.staleness = staleness
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.backoff = backoff
        self.clock = clock
        self._store: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._synced = threading.Event()
        self._broken_since: float | None = None
        self._last_error = ""
        self._response: Any = None  # the open watch response, to cut it short on stop()
        self._thread = threading.Thread(
            target=self._run, name=f"mlgate-informer-{collection.what}", daemon=True
        )

    # --- reading ---

    def start(self) -> None:
        self._thread.start()

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    def health(self) -> CacheHealth:
        with self._lock:
            return CacheHealth(self._synced.is_set(), self._broken_since, self._last_error)

    def failure(self) -> LookupFailure | None:
        """Why this cache cannot be trusted right now, or None when it can."""
        health = self.health()
        what = self.collection.what
        if not health.synced:
            cause = f" (last error: {health.last_error})" if health.last_error else ""
            return LookupFailure(what=what, reason=f"the cache has not synced yet{cause}")
        if health.broken_since is not None:
            broken_for = self.clock() - health.broken_since
            if broken_for > self.staleness:
                return LookupFailure(
                    what=what,
                    reason=f"the watch has been broken for {broken_for:.0f}s "
                    f"(more than {self.staleness:.0f}s): {health.last_error}",
                )
        return None

    def namespace_items(self, namespace: str) -> list[Any]:
        with self._lock:
            return list(self._store.get(namespace, {}).values())

    def get(self, namespace: str, name: str) -> Any | None:
        with self._lock:
            return self._store.get(namespace, {}).get(name)

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            # Unblock the thread's read (urllib3's shutdown() is for exactly this); the watch
            # would otherwise run to its timeout.
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                response.shutdown()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the loop ---

    def _run(self) -> None:
        delay = self.backoff[0]
        resource_version: str | None = None
        while not self._stopped.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist()
                resource_version = self._follow(resource_version)
                delay = self.backoff[0]
            except KubeGoneError:
                log.info("%s: resourceVersion expired (410), listing again", self.collection.what)
                resource_version = None
            except Exception as raw:  # the thread must survive anything; it reports the error
                error = translate_error(raw)
                self._mark_broken(error)
                log.warning("%s: %s; retrying in %.1fs", self.collection.what, error, delay)
                # NOTE: jitter keeps several workers' informers from reconnecting in lockstep.
                if self._stopped.wait(delay * random.uniform(0.8, 1.2)):
                    break
                delay = min(delay * 2, self.backoff[1])

    def _relist(self) -> str:
        response = self._call(self.collection.list_call)
        try:
            body = orjson.loads(response.data)
        finally:
            response.release_conn()
        store: dict[str, dict[str, Any]] = {}
        for item in body.get("items") or []:
            namespace, name, value = self._convert(item)
            store.setdefault(namespace, {})[name] = value
        with self._lock:
            self._store = store
            self._broken_since = None
            self._last_error = ""
        self._synced.set()
        version = (body.get("metadata") or {}).get("resourceVersion")
        return str(version or "")

    def _follow(self, resource_version: str) -> str:
        """Apply watch events until the server ends the watch; the resourceVersion reached."""
        for event in self._events(resource_version):
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                code = int(obj.get("code") or 0)
                reason = f"{obj.get('reason', '')}: {obj.get('message', '')}"
                raise translate_error(ApiException(status=code, reason=reason))
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(kind, obj)
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                resource_version = str(version)
            if self._stopped.is_set():
                break
        return resource_version

    def _events(self, resource_version: str) -> Iterator[JsonObject]:
        """The events of one watch request, parsed; ends when the server ends the watch."""
        # NOTE: we read the stream ourselves rather than through kubernetes.watch.Watch: its
        # deserialize=False mode fails on ERROR events (KeyError 'raw_object'), so a 410 Gone
        # would never be recognised, and deserializing into models costs far more than orjson.
        response = self._call(
            self.collection.list_call,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=(self.request_timeout, self.watch_timeout + self.request_timeout),
        )
        self._response = response
        if self._stopped.is_set():  # stop() came before there was a response to cut short
            response.release_conn()
            return
        try:
            for line in watch.watch.iter_resp_lines(response):  # type: ignore[no-untyped-call]
                if line.strip():
                    yield orjson.loads(line)
        except KubeError:
            raise
        except Exception as raw:
            raise translate_error(raw) from raw
        finally:
            self._response = None
            response.release_conn()
        with self._lock:  # a watch that ran its course is healthy
            self._broken_since = None
            self._last_error = ""

    def _call(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return call(_preload_content=False, **kwargs)
        except Exception as raw:
            raise translate_error(raw) from raw

    def _apply(self, kind: str, obj: JsonObject) -> None:
        namespace, name, value = self._convert(obj)
        with self._lock:
            items = self._store.setdefault(namespace, {})
            if kind == "DELETED":
                items.pop(name, None)
            else:
                items[name] = value
            # Events flowing again mean the watch is healthy.
            self._broken_since = None
            self._last_error = ""

    def _convert(self, item: JsonObject) -> tuple[str, str, Any]:
        item.setdefault("kind", self.collection.kind)
        item.setdefault("apiVersion", self.collection.api_version)
        metadata = item.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        return namespace, str(metadata.get("name") or ""), self.collection.convert(item)

    def _mark_broken(self, error: KubeError) -> None:
        with self._lock:
            if self._broken_since is None:
                self._broken_since = self.clock()
            self._last_error = str(error)


# --- what each item becomes ---------------------------------------------------------------------


def convert_namespace(item: JsonObject) -> dict[str, str]:
    labels = (item.get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def convert_workload(item: JsonObject) -> JsonObject:
    """The workload without what no decision reads (managedFields, the last-applied copy)."""
    metadata = dict(item.get("metadata") or {})
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        metadata["annotations"] = {
            k: v for k, v in annotations.items() if k not in DROPPED_ANNOTATIONS
        }
    return {
        "apiVersion": item.get("apiVersion"),
        "kind": item.get("kind"),
        "metadata": metadata,
        "spec": item.get("spec") or {},
    }


# (group, resource) -> (kind, apiVersion) of the workloads behind scale requests.
WORKLOADS: dict[tuple[str, str], tuple[str, str]] = {
    ("apps", "deployments"): ("Deployment", "apps/v1"),
    ("apps", "statefulsets"): ("StatefulSet", "apps/v1"),
    ("apps", "replicasets"): ("ReplicaSet", "apps/v1"),
    ("argoproj.io", "rollouts"): ("Rollout", "argoproj.io/v1alpha1"),
}


class KubeClusterView:
    """``ClusterView`` over informers started at construction (all of them, see ``start``)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        staleness: float = 30.0,
        watch_timeout: int = 300,
        request_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        workloads: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_client = api_client
        core = client.CoreV1Api(api_client)
        apps = client.AppsV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        collections = [
            Collection(
                "ResourceQuotas",
                "ResourceQuota",
                "v1",
                core.list_resource_quota_for_all_namespaces,
                QuotaStatus.from_object,
            ),
            Collection("Namespaces", "Namespace", "v1", core.list_namespace, convert_namespace),
        ]
        if workloads:
            collections += [
                Collection(
                    "deployments.apps",
                    "Deployment",
                    "apps/v1",
                    apps.list_deployment_for_all_namespaces,
                    convert_workload,
                ),
                Collection(
                    "statefulsets.apps",
                    "StatefulSet",
                    "apps/v1",
                    apps.list_stateful_set_for_all_namespaces,
                    convert_workload,
                ),
                Collection(
                    "replicasets.apps",
                    "ReplicaSet",
                    "apps/v1",
                    apps.list_replica_set_for_all_namespaces,
                    convert_workload,
                ),
                Collection(
                    "rollouts.argoproj.io",
                    "Rollout",
                    "argoproj.io/v1alpha1",
                    _bind_custom(custom, "argoproj.io", "v1alpha1", "rollouts"),
                    convert_workload,
                ),
            ]
        self.informers = {
            c.what: Informer(
                c,
                staleness=staleness,
                watch_timeout=watch_timeout,
                request_timeout=request_timeout,
                backoff=backoff,
                clock=clock,
            )
            for c in collections
        }
        for informer in self.informers.values():
            informer.start()

    def wait_synced(self, timeout: float) -> bool:
        """Whether every cache synced within ``timeout`` seconds (for readiness and tests)."""
        deadline = time.monotonic() + timeout
        return all(
            i.wait_synced(max(0.0, deadline - time.monotonic())) for i in self.informers.values()
        )

    def namespace_labels(self, namespace: str) -> dict[str, str] | None:
        informer = self.informers["Namespaces"]
        if informer.failure() is not None:
            return None
        labels = informer.get("", namespace)
        return dict(labels) if isinstance(labels, dict) else None

    def resource_quotas(self, namespace: str) -> tuple[QuotaStatus, ...] | LookupFailure:
        informer = self.informers["ResourceQuotas"]
        failure = informer.failure()
        if failure is not None:
            return failure
        return tuple(sorted(informer.namespace_items(namespace), key=lambda q: q.name))

    def workload(
        self, *, group: str, resource: str, namespace: str, name: str
    ) -> dict[str, Any] | LookupFailure:
        what = f"{resource}.{group}" if group else resource
        informer = self.informers.get(what)
        if informer is None or (group, resource) not in WORKLOADS:
            return LookupFailure(
                what=f"{what} {namespace}/{name}", reason="mlgate does not cache it"
            )
        failure = informer.failure()
        if failure is not None:
            return LookupFailure(what=f"{what} {namespace}/{name}", reason=failure.reason)
        item = informer.get(namespace, name)
        if item is None:
            return LookupFailure(what=f"{what} {namespace}/{name}", reason="not found in the cache")
        return dict(item)

    def close(self) -> None:
        for informer in self.informers.values():
            informer.stop()
        for informer in self.informers.values():
            informer.join(2.0)
        self.api_client.close()  # type: ignore[no-untyped-call]


def _bind_custom(
    custom: client.CustomObjectsApi, group: str, version: str, plural: str
) -> Callable[..., Any]:
    """The list call of a custom resource across namespaces, shaped like the built-in ones."""

    def list_custom(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object(group, version, plural, **kwargs)

    return list_custom


def connect_cluster(kubeconfig: str | None, **options: Any) -> KubeClusterView | None:
    """A view of the cluster from ``kubeconfig`` if given, else the in-cluster service account,
    else ``$KUBECONFIG``.

    None when none is available: mlgate then decides without the cluster (the live quota rule is
    skipped, scale requests get the failure action). Raises KubeConfigError for a kubeconfig
    that is given but cannot be loaded. ``options`` go to ``KubeClusterView``.
    """
    configuration = client.Configuration()
    if not kubeconfig:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            kubeconfig = os.environ.get("KUBECONFIG") or None
            if kubeconfig is None:
                return None
        else:
            return KubeClusterView(client.ApiClient(configuration), **options)
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as error:
        raise KubeConfigError(f"cannot load kubeconfig {kubeconfig}: {error}") from error
    return KubeClusterView(client.ApiClient(configuration), **options)
