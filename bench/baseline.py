"""The baseline: the least an admission webhook can do on this stack, served the same way.

A falcon app that parses the AdmissionReview with orjson and answers with a one-operation
patch, run by ``webhook.server.WebhookServer`` (the very gunicorn configuration of ``mlgate
serve``: gthread workers, reuse_port, one SSL context per worker). With ``--default-tls`` the
SSL context is gunicorn's own default instead: a new context, and the certificate files read
again, for every accepted connection.

``python -m bench.baseline --bind 127.0.0.1:9443 --cert tls.crt --key tls.key``
"""

from __future__ import annotations

import argparse
import base64
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import falcon
import orjson

from webhook.server import ServerOptions, WebhookServer

PATCH = base64.b64encode(
    orjson.dumps([{"op": "add", "path": "/metadata/labels/mlgate.io~1seen", "value": "true"}])
).decode("ascii")


class ReviewResource:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        review = orjson.loads(req.bounded_stream.read())
        response = {
            "uid": review["request"]["uid"],
            "allowed": True,
            "patchType": "JSONPatch",
            "patch": PATCH,
        }
        resp.content_type = falcon.MEDIA_JSON
        resp.data = orjson.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )


class HealthResource:
    def on_get(self, _req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = b'{"status":"ok"}'


def create_baseline_app() -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App()
    review = ReviewResource()
    app.add_route("/mutate", review)
    app.add_route("/validate", review)
    app.add_route("/healthz", HealthResource())
    return app


def gunicorn_default_ssl_context(
    _conf: Any, default_factory: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """gunicorn's own behaviour: build a fresh context for every accepted connection."""
    return default_factory()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=ServerOptions.workers)
    parser.add_argument("--threads", type=int, default=ServerOptions.threads)
    parser.add_argument("--default-tls", action="store_true", help="gunicorn's default SSL setup")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {}
    if args.default_tls:
        extra["ssl_context"] = gunicorn_default_ssl_context
    options = ServerOptions(
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        cert_file=args.cert,
        key_file=args.key,
        log_level="warning",
        extra=extra,
    )
    WebhookServer(lambda: (create_baseline_app(), lambda: None), options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
