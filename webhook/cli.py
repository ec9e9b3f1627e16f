"""The ``mlgate`` command: ``serve``, ``policy lint``, and the command groups of other modules.

Every ``serve`` flag can also be given as an ``MLGATE_*`` environment variable (``--audit-db``
is ``MLGATE_AUDIT_DB``); a flag wins over the variable.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from certs import cli as certs_cli
from policies.loader import PolicyLoadError, default_policy_dir, load_policy_dir
from webhook.audit import cli as audit_cli
from webhook.audit.record import AuditSink
from webhook.settings import DEFAULT_MAX_BODY_BYTES

log = logging.getLogger("mlgate.cli")

DEV_CERT_RENEW_BEFORE = dt.timedelta(days=7)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"MLGATE_{name}", default)


def add_serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="run the admission webhook (HTTPS, gunicorn)",
        description="Run the admission webhook. With no certificate, a local CA and a serving "
        "certificate for localhost are made in the state folder; with no policy folder, the "
        "default policies shipped with mlgate are used.",
    )
    serve.add_argument("--bind", default=_env("BIND", "127.0.0.1:8443"), help="HOST:PORT")
    serve.add_argument("--workers", type=int, default=int(_env("WORKERS", "2") or 2))
    serve.add_argument("--threads", type=int, default=int(_env("THREADS", "4") or 4))
    serve.add_argument("--cert", type=Path, default=_path(_env("CERT")), help="TLS certificate")
    serve.add_argument("--key", type=Path, default=_path(_env("KEY")), help="TLS private key")
    serve.add_argument(
        "--policies", type=Path, default=_path(_env("POLICIES")), help="policy folder"
    )
    serve.add_argument(
        "--audit-db",
        default=_env("AUDIT_DB"),
        help="SQLite path or postgresql:// URL (default: STATE_DIR/audit.db)",
    )
    serve.add_argument(
        "--state-dir", type=Path, default=Path(_env("STATE_DIR", ".mlgate") or ".mlgate")
    )
    serve.add_argument(
        "--kubeconfig",
        default=_env("KUBECONFIG"),
        help="kubeconfig for the live checks (default: in-cluster config, then $KUBECONFIG)",
    )
    serve.add_argument(
        "--no-cluster",
        action="store_true",
        default=_env("NO_CLUSTER", "") in ("1", "true"),
        help="do not read the cluster: the live ResourceQuota check is skipped and scale "
        "requests follow each policy's failureAction",
    )
    serve.add_argument(
        "--max-body-bytes", type=int, default=int(_env("MAX_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)
    )
    serve.add_argument(
        "--namespace",
        default=_env("NAMESPACE", os.environ.get("POD_NAMESPACE", "mlgate-system")),
        help="mlgate's own namespace, never acted on",
    )
    serve.add_argument(
        "--events",
        action="store_true",
        default=_env("EVENTS", "") in ("1", "true"),
        help="also record each denial as a Kubernetes Event (reason PolicyViolation)",
    )
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"))
    audit_cli.add_retention_arguments(serve)
    certs_cli.add_manage_certs_arguments(serve)
    serve.set_defaults(func=run_serve)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def ensure_dev_certificate(state_dir: Path) -> tuple[Path, Path, Path]:
    """A local CA and a serving certificate for localhost/127.0.0.1, made once and reused.

    Returns the paths of ``ca.crt``, ``tls.crt`` and ``tls.key``; a leaf that expires within a
    week is renewed with the same CA.
    """
    from certs.authority import KeyPair, build_ca, build_serving_cert

    state_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: state_dir / name for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}
    now = dt.datetime.now(dt.UTC)
    ca: KeyPair | None = None
    if paths["ca.crt"].is_file() and paths["ca.key"].is_file():
        ca = KeyPair(paths["ca.crt"].read_bytes(), paths["ca.key"].read_bytes())
        if ca.certificate.not_valid_after_utc - now < DEV_CERT_RENEW_BEFORE:
            ca = None
    if ca is None:
        ca = build_ca(common_name="mlgate local development CA")
        _write(paths["ca.key"], ca.key_pem, private=True)
        _write(paths["ca.crt"], ca.cert_pem)
        paths["tls.crt"].unlink(missing_ok=True)
    leaf_ok = paths["tls.crt"].is_file() and paths["tls.key"].is_file()
    if leaf_ok:
        leaf = KeyPair(paths["tls.crt"].read_bytes(), paths["tls.key"].read_bytes())
        leaf_ok = leaf.certificate.not_valid_after_utc - now > DEV_CERT_RENEW_BEFORE
    if not leaf_ok:
        leaf = build_serving_cert(ca=ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
        _write(paths["tls.key"], leaf.key_pem, private=True)
        _write(paths["tls.crt"], leaf.cert_pem)
    return paths["ca.crt"], paths["tls.crt"], paths["tls.key"]


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def client_config_text(bind: str, ca_file: Path) -> str:
    """The ``clientConfig`` an API server needs to call this webhook, as YAML to paste."""
    host, _, port = bind.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    bundle = base64.b64encode(ca_file.read_bytes()).decode()
    return (
        f"mlgate: CA certificate: {ca_file.resolve()}\n"
        "mlgate: clientConfig of the MutatingWebhookConfiguration's webhook:\n"
        f"  clientConfig:\n    url: https://{host}:{port}/mutate\n    caBundle: {bundle}\n"
        "mlgate: clientConfig of the ValidatingWebhookConfiguration's webhook:\n"
        f"  clientConfig:\n    url: https://{host}:{port}/validate\n    caBundle: {bundle}\n"
    )


def run_serve(args: argparse.Namespace) -> int:
    from webhook.server import ServerOptions, WebhookServer
    from webhook.settings import Settings

    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    if (args.cert is None) != (args.key is None):
        print("mlgate serve: give both --cert and --key, or neither", file=sys.stderr)
        return 2
    if args.manage_certs:
        cert_file, key_file = certs_cli.start_managed_certificates(args)
    elif args.cert is None:
        ca_file, cert_file, key_file = ensure_dev_certificate(args.state_dir)
        sys.stdout.write(client_config_text(args.bind, ca_file))
    else:
        cert_file, key_file = args.cert, args.key
    policies_dir = args.policies or default_policy_dir()
    try:
        policy_set = load_policy_dir(policies_dir)
        print(
            f"mlgate: {len(policy_set.policies)} policies from {policies_dir}: "
            + ", ".join(p.name for p in policy_set.policies)
        )
    except PolicyLoadError as exc:
        # NOTE: start anyway, not ready: the folder may be fixed (hot reload), and other
        # replicas with a good set keep serving meanwhile.
        print(f"mlgate: policy files are invalid; not ready until fixed:\n{exc}", file=sys.stderr)
    settings = Settings(
        policies_dir=policies_dir,
        max_body_bytes=args.max_body_bytes,
        own_namespace=args.namespace,
        cert_file=cert_file,
        key_file=key_file,
    )
    audit_target = args.audit_db or str(args.state_dir / "audit.db")
    if "://" not in audit_target:
        Path(audit_target).parent.mkdir(parents=True, exist_ok=True)
    from webhook.audit.report import ReportArgumentError
    from webhook.audit.store import SinkGroup
    from webhook.audit.writer import AuditWriterProcess

    try:
        retention = audit_cli.build_retention(args)
    except ReportArgumentError as exc:
        print(f"mlgate serve: {exc}", file=sys.stderr)
        return 2
    writer = AuditWriterProcess(audit_target, retention=retention, log_level=args.log_level)
    print(f"mlgate: audit store {audit_target} (one writer process for all workers)")
    print(f"mlgate: serving https://{args.bind} (mutate, validate, healthz, readyz, metrics)")
    sys.stdout.flush()

    def app_factory() -> Any:
        from webhook.app import create_app

        cluster = None if args.no_cluster else connect_cluster_or_none(args.kubeconfig)
        sink: AuditSink = writer.channel()
        if args.events and cluster is not None:
            from webhook.events import open_event_recorder

            sink = SinkGroup([sink, open_event_recorder(cluster.api_client)])
        app = create_app(settings, kube=cluster, audit=sink)

        def close() -> None:
            sink.close()
            if cluster is not None:
                cluster.close()

        return app, close

    options = ServerOptions(
        bind=args.bind,
        workers=args.workers,
        threads=args.threads,
        cert_file=cert_file,
        key_file=key_file,
        log_level=args.log_level,
    )
    WebhookServer(app_factory, options, services=[writer]).run()
    return 0


def connect_cluster_or_none(kubeconfig: str | None) -> Any:
    """The live cluster view, or None (logged) when no cluster is configured."""
    from webhook.kube import connect_cluster

    cluster = connect_cluster(kubeconfig)
    if cluster is None:
        log.warning(
            "no cluster access (no in-cluster config, no kubeconfig): the live ResourceQuota "
            "check is skipped, and scale requests follow each policy's failureAction"
        )
    return cluster


def add_policy_parser(subparsers: Any) -> None:
    policy = subparsers.add_parser("policy", help="work with policy files")
    commands = policy.add_subparsers(dest="policy_command", required=True)
    lint = commands.add_parser(
        "lint", help="check a folder of policy files; prints file:line: field: message"
    )
    lint.add_argument("directory", nargs="?", type=Path, default=default_policy_dir())
    lint.set_defaults(func=run_policy_lint)
    schema = commands.add_parser("schema", help="print the JSON Schema of policy files")
    schema.set_defaults(func=run_policy_schema)
    from webhook.policytest.command import add_test_parser

    add_test_parser(commands)


def run_policy_lint(args: argparse.Namespace) -> int:
    try:
        policy_set = load_policy_dir(args.directory)
    except PolicyLoadError as exc:
        for error in exc.errors:
            print(error)
        count = len(exc.errors)
        print(f"{count} error{'s' if count != 1 else ''} in {args.directory}", file=sys.stderr)
        return 1
    names = ", ".join(p.name for p in policy_set.policies)
    print(f"{args.directory}: {len(policy_set.policies)} policies OK ({names})")
    return 0


def run_policy_schema(_args: argparse.Namespace) -> int:
    import json

    from policies.loader import policy_schema

    print(json.dumps(policy_schema(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlgate", description="Admission webhook and policy engine for ML model serving."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    add_policy_parser(subparsers)
    audit_cli.register(subparsers)
    certs_cli.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
