"""The ``mlgate certs`` command group: ``generate`` and ``inject``.

``webhook.cli`` calls ``register(subparsers)``; each subcommand sets ``func`` to a handler that
takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from pathlib import Path
from typing import get_args

from certs.authority import KeyType, build_ca, build_serving_cert, service_dns_names
from certs.cluster import (
    DEFAULT_MUTATING_NAME,
    DEFAULT_VALIDATING_NAME,
    ClusterError,
    inject_ca_bundle,
    load_api_client,
    read_published_ca_fingerprints,
)
from certs.files import CertificateFiles, CertificateFilesExistError, write_certificate_files

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
