"""The ``mlgate certs`` command group (``generate``, ``inject``) and ``serve --manage-certs``.

``webhook.cli`` calls ``register(subparsers)``; each subcommand sets ``func`` to a handler that
takes the parsed arguments and returns the exit code. For ``serve``, it calls
``add_manage_certs_arguments(serve_parser)`` and, when ``--manage-certs`` is given,
``start_managed_certificates(args)`` before starting gunicorn.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import logging
import os
import socket
import sys
from pathlib import Path
from typing import get_args

from certs.authority import KeyType, build_ca, build_serving_cert, service_dns_names
from certs.cluster import (
    DEFAULT_MUTATING_NAME,
    DEFAULT_SECRET_NAME,
    DEFAULT_VALIDATING_NAME,
    ClusterError,
    KubeCertificateStore,
    inject_ca_bundle,
    load_api_client,
    read_published_ca_fingerprints,
)
from certs.files import (
    CERT_FILE,
    KEY_FILE,
    CertificateFiles,
    CertificateFilesExistError,
    write_certificate_files,
)
from certs.manager import CertificateManager, ManagerSettings, start_manager_thread

log = logging.getLogger("mlgate.certs")

DAYS_PER_YEAR = 365
DAYS_PER_MONTH = 30


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs generate`` and ``certs inject`` to the ``mlgate`` command line."""
    certs = subparsers.add_parser("certs", help="create certificates and publish the CA bundle")
    commands = certs.add_subparsers(dest="certs_command", required=True)

    generate = commands.add_parser(
        "generate", help="write ca.crt, tls.crt and tls.key for the webhook Service"
    )
    generate.add_argument("--service", required=True, help="name of the webhook Service")
    generate.add_argument("--namespace", required=True, help="namespace of the Service")
    generate.add_argument("--out", required=True, type=Path, help="directory to write into")
    generate.add_argument("--force", action="store_true", help="overwrite existing files")
    generate.add_argument(
        "--key-type", choices=get_args(KeyType), default="ecdsa-p256", help="default ecdsa-p256"
    )
    generate.add_argument("--ca-years", type=_positive_int, default=5, help="default 5")
    generate.add_argument("--leaf-months", type=_positive_int, default=12, help="default 12")
    generate.add_argument(
        "--extra-san",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="another DNS name or IP address for the serving certificate (repeatable)",
    )
    generate.set_defaults(func=run_generate)

    inject = commands.add_parser("inject", help="set caBundle on mlgate's webhook configurations")
    inject.add_argument("--ca", required=True, type=Path, help="PEM file with the CA bundle")
    inject.add_argument("--kubeconfig", help="default: in-cluster, else ~/.kube/config")
    inject.add_argument("--mutating-name", default=DEFAULT_MUTATING_NAME)
    inject.add_argument("--validating-name", default=DEFAULT_VALIDATING_NAME)
    inject.set_defaults(func=run_inject)


def add_manage_certs_arguments(serve: argparse.ArgumentParser) -> None:
    """The ``serve`` flags of certificate self-management (``MLGATE_*`` variables too)."""
    env = os.environ.get
    group = serve.add_argument_group("certificate self-management (in a cluster)")
    group.add_argument(
        "--manage-certs",
        action="store_true",
        default=env("MLGATE_MANAGE_CERTS", "") in ("1", "true"),
        help="keep the CA and serving certificate in a Secret, renew them and the caBundle",
    )
    group.add_argument(
        "--cert-dir",
        type=Path,
        default=Path(env("MLGATE_CERT_DIR", "/run/mlgate/certs")),
        help="where the served files are written (default /run/mlgate/certs)",
    )
    group.add_argument("--cert-secret", default=env("MLGATE_CERT_SECRET", DEFAULT_SECRET_NAME))
    group.add_argument(
        "--service-name",
        default=env("MLGATE_SERVICE_NAME", "mlgate"),
        help="the webhook Service the certificate is for",
    )
    group.add_argument(
        "--cert-extra-san",
        action="append",
        default=[],
        help="another DNS name or IP address (repeatable)",
    )
    group.add_argument("--mutating-name", default=DEFAULT_MUTATING_NAME)
    group.add_argument("--validating-name", default=DEFAULT_VALIDATING_NAME)
    group.add_argument(
        "--cert-check-interval",
        type=_positive_int,
        default=int(env("MLGATE_CERT_CHECK_INTERVAL", "60")),
        help="seconds between checks of the Secret (default 60)",
    )
    group.add_argument("--leaf-days", type=_positive_int, default=90, help="default 90")
    group.add_argument("--ca-days", type=_positive_int, default=5 * DAYS_PER_YEAR)
    group.add_argument(
        "--renew-fraction",
        type=float,
        default=2 / 3,
        help="renew once this fraction of a certificate's life has passed (default 2/3)",
    )
    group.add_argument(
        "--replica-name",
        default=env("POD_NAME") or socket.gethostname(),
        help="this replica's name in the Secret's reports (default $POD_NAME)",
    )


def start_managed_certificates(args: argparse.Namespace) -> tuple[Path, Path]:
    """Converge once (files exist when this returns), then keep converging in a thread.

    Returns the certificate and key paths the server must load. Uses ``args.namespace`` and
    ``args.kubeconfig`` from ``serve``.
    """
    interval = dt.timedelta(seconds=args.cert_check_interval)
    settings = ManagerSettings(
        service=args.service_name,
        namespace=args.namespace,
        extra_sans=tuple(args.cert_extra_san),
        ca_valid_for=dt.timedelta(days=args.ca_days),
        leaf_valid_for=dt.timedelta(days=args.leaf_days),
        renew_fraction=args.renew_fraction,
        # A replica reports at least every ack_ttl/3, so five intervals mean it is gone.
        ack_ttl=5 * interval,
        min_overlap=2 * interval,
    )
    store = KubeCertificateStore(
        api_client=load_api_client(args.kubeconfig),
        namespace=args.namespace,
        secret_name=args.cert_secret,
        mutating_name=args.mutating_name,
        validating_name=args.validating_name,
    )
    manager = CertificateManager(
        settings=settings, store=store, directory=args.cert_dir, replica=args.replica_name
    )
    state = manager.reconcile_once()
    log.info(
        "certificates managed in secret %s/%s; serving certificate valid until %s",
        args.namespace,
        args.cert_secret,
        state.serving.certificate.not_valid_after_utc.isoformat(),
    )
    start_manager_thread(manager, interval=interval)
    return args.cert_dir / CERT_FILE, args.cert_dir / KEY_FILE


def run_generate(args: argparse.Namespace) -> int:
    """Build a CA and a serving certificate and write them to ``args.out``."""
    dns_names = service_dns_names(args.service, args.namespace)
    ip_addresses: list[str] = []
    for san in args.extra_san:
        if _is_ip_address(san):
            ip_addresses.append(san)
        elif san not in dns_names:
            dns_names.append(san)
    now = dt.datetime.now(dt.UTC)
    ca = build_ca(
        valid_for=dt.timedelta(days=DAYS_PER_YEAR * args.ca_years), key_type=args.key_type, now=now
    )
    serving = build_serving_cert(
        ca=ca,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        valid_for=dt.timedelta(days=DAYS_PER_MONTH * args.leaf_months),
        key_type=args.key_type,
        now=now,
    )
    try:
        paths = write_certificate_files(
            args.out,
            files=CertificateFiles(ca_bundle_pem=ca.cert_pem, serving=serving),
            force=args.force,
        )
    except CertificateFilesExistError as error:
        print(f"mlgate certs generate: {error}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def run_inject(args: argparse.Namespace) -> int:
    """Put the CA bundle from ``args.ca`` into both webhook configurations."""
    bundle = args.ca.read_bytes()
    try:
        api_client = load_api_client(args.kubeconfig)
        published = read_published_ca_fingerprints(
            api_client, mutating_name=args.mutating_name, validating_name=args.validating_name
        )
        if published is None:
            print(
                "mlgate certs inject: no webhook configuration named "
                f"{args.mutating_name!r} / {args.validating_name!r}; apply the manifests first",
                file=sys.stderr,
            )
            return 1
        changed = inject_ca_bundle(
            api_client,
            bundle_pem=bundle,
            mutating_name=args.mutating_name,
            validating_name=args.validating_name,
        )
    except ClusterError as error:
        print(f"mlgate certs inject: {error}", file=sys.stderr)
        return 1
    for name in changed:
        print(f"{name}: caBundle set")
    if not changed:
        print("caBundle already up to date")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
