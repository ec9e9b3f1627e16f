"""A small HTTP server speaking the Kubernetes list/watch protocol, for the cluster view's tests.

It serves the collections mlgate watches (ResourceQuotas, Namespaces, Deployments,
StatefulSets, ReplicaSets and, optionally, Argo Rollouts) the way kube-apiserver does: a list
carries ``metadata.resourceVersion``; ``?watch=1&resourceVersion=N`` streams one JSON event per
line (ADDED, MODIFIED, DELETED) for every change after N, ends after ``timeoutSeconds``, and
answers a resourceVersion older than what it still remembers with an ERROR event of code 410.
The real ``kubernetes`` client talks to it through a ``Configuration`` whose host is its URL.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

JsonObject = dict[str, Any]

COLLECTIONS: dict[str, tuple[str, str]] = {
    "/api/v1/resourcequotas": ("ResourceQuota", "v1"),
    "/api/v1/namespaces": ("Namespace", "v1"),
    "/apis/apps/v1/deployments": ("Deployment", "apps/v1"),
    "/apis/apps/v1/statefulsets": ("StatefulSet", "apps/v1"),
    "/apis/apps/v1/replicasets": ("ReplicaSet", "apps/v1"),
    "/apis/argoproj.io/v1alpha1/rollouts": ("Rollout", "argoproj.io/v1alpha1"),
}
ROLLOUTS = "/apis/argoproj.io/v1alpha1/rollouts"


@dataclass
class Collection:
    kind: str
    api_version: str
    items: dict[tuple[str, str], JsonObject] = field(default_factory=dict)
    events: list[tuple[int, str, JsonObject]] = field(default_factory=list)
    oldest: int = 0  # a watch from before this resourceVersion gets 410 Gone


class KubeApiServer:
    """Call ``start()``; change objects with ``put``/``delete``; ``expire`` forgets history."""

    def __init__(self, *, rollouts: bool = True) -> None:
        self.collections = {
            path: Collection(kind, api_version)
            for path, (kind, api_version) in COLLECTIONS.items()
            if rollouts or path != ROLLOUTS
        }
        self.version = 1
        self.changed = threading.Condition()
        self.closing = False
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # watches stream chunked, as kube-apiserver's do

            def do_GET(self) -> None:
                server.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: open watches end and new connections are refused."""
        with self.changed:
            self.closing = True
            self.changed.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- changing the cluster ---

    def put(self, path: str, obj: JsonObject) -> None:
        with self.changed:
            collection = self.collections[path]
            self.version += 1
            stored = json.loads(json.dumps(obj))
            metadata = stored.setdefault("metadata", {})
            metadata["resourceVersion"] = str(self.version)
            key = (metadata.get("namespace", ""), metadata["name"])
            kind = "MODIFIED" if key in collection.items else "ADDED"
            collection.items[key] = stored
            collection.events.append((self.version, kind, stored))
            self.changed.notify_all()

    def delete(self, path: str, *, namespace: str, name: str) -> None:
        with self.changed:
            collection = self.collections[path]
            stored = collection.items.pop((namespace, name))
            self.version += 1
            collection.events.append((self.version, "DELETED", stored))
            self.changed.notify_all()

    def expire(self) -> None:
        """Forget every event so far: open watches, and watches from an older
        resourceVersion, get 410 Gone, as after an etcd compaction."""
        with self.changed:
            self.version += 1
            for collection in self.collections.values():
                collection.events.clear()
                collection.oldest = self.version + 1
            self.changed.notify_all()

    def count_requests(self, prefix: str) -> int:
        with self.changed:
            return sum(1 for r in self.requests if r.startswith(prefix))

    # --- serving ---

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        if self.closing:  # a stopped server answers nothing, even on kept-alive connections
            handler.close_connection = True
            return
        parts = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with self.changed:
            self.requests.append(handler.path)
        collection = self.collections.get(parts.path)
        if collection is None:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "code": 404,
                "message": f"the server could not find the requested resource ({parts.path})",
            }
            self.send_json(handler, 404, status)
            return
        if query.get("watch") in ("1", "true"):
            self.stream_watch(handler, collection, query)
            return
        with self.changed:
            body = {
                "kind": f"{collection.kind}List",
                "apiVersion": collection.api_version,
                "metadata": {"resourceVersion": str(self.version)},
                # NOTE: as kube-apiserver does, list items carry no kind/apiVersion.
                "items": [
                    {k: v for k, v in item.items() if k not in ("kind", "apiVersion")}
                    for item in collection.items.values()
                ],
            }
        self.send_json(handler, 200, body)

    def stream_watch(
        self, handler: BaseHTTPRequestHandler, collection: Collection, query: dict[str, str]
    ) -> None:
        since = int(query.get("resourceVersion") or self.version)
        deadline = time.monotonic() + float(query.get("timeoutSeconds", "30"))
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            self.stream_events(handler, collection, since=since, deadline=deadline)
        finally:
            if self.closing:
                handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.wfile.write(b"0\r\n\r\n")
                handler.wfile.flush()

    def stream_events(
        self,
        handler: BaseHTTPRequestHandler,
        collection: Collection,
        *,
        since: int,
        deadline: float,
    ) -> None:
        while True:
            if since < collection.oldest - 1:
                self.write_line(handler, {"type": "ERROR", "object": self.gone(since, collection)})
                return
            with self.changed:
                pending = [(v, t, o) for v, t, o in collection.events if v > since]
                if not pending:
                    left = deadline - time.monotonic()
                    if left <= 0 or self.closing:
                        return
                    self.changed.wait(min(left, 0.2))
                    continue
            for version, kind, obj in pending:
                event_obj = {"kind": collection.kind, "apiVersion": collection.api_version, **obj}
                if not self.write_line(handler, {"type": kind, "object": event_obj}):
                    return
                since = version

    @staticmethod
    def gone(since: int, collection: Collection) -> JsonObject:
        """The Status kube-apiserver sends when a watch's resourceVersion was compacted away."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Expired",
            "code": 410,
            "message": f"too old resource version: {since} ({collection.oldest})",
        }

    @staticmethod
    def write_line(handler: BaseHTTPRequestHandler, event: JsonObject) -> bool:
        line = json.dumps(event).encode() + b"\n"
        try:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            handler.wfile.flush()
        except OSError:
            return False
        return True

    @staticmethod
    def send_json(handler: BaseHTTPRequestHandler, code: int, body: JsonObject) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
