"""In-cluster certificate self-management: decide what to do with the CA and serving pair.

The state lives in one Secret (see ``certs.cluster`` for the API calls); every replica runs the
same loop: read the Secret, decide, write it back with its ``resourceVersion`` (a conflict means
another replica won: read again and decide again), write the files the server reads, and keep the
webhook configurations' ``caBundle`` equal to the Secret's trust bundle. Because every write is
conditional on the version that was read, two replicas can never both install a CA.

Everything in this module up to ``CertificateManager`` is pure: the state, the time and what the
replica observed go in, the next state comes out.

A CA rotation runs in three steps so that the API server trusts every replica at every moment:

1. ``start-ca-rotation``: a new CA joins the bundle (new first, old second); the serving
   certificate is still the one signed by the old CA.
2. ``issue-leaf-from-new-ca``: once every webhook's ``caBundle`` holds the new CA and
   ``min_overlap`` has passed (API servers pick the configuration up through an informer), a new
   serving certificate signed by the new CA replaces the old one.
3. ``finish-ca-rotation``: once every live replica reports that it serves the new leaf (each
   records what it serves in an annotation, refreshed well within ``ack_ttl``), the old CA
   leaves the bundle.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certs.authority import (
    CLOCK_SKEW,
    KeyPair,
    KeyType,
    build_ca,
    build_serving_cert,
    service_dns_names,
)
from certs.files import CertificateFiles, publish_certificate_files, read_certificate_files

log = logging.getLogger(__name__)

# Keys of the Secret's data.
BUNDLE_KEY = "ca.crt"
CA_CERT_KEY = "ca-signing.crt"
CA_KEY_KEY = "ca-signing.key"
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
ACKS_ANNOTATION = "mlgate.io/serving-replicas"

Step = Literal[
    "none",
    "create",
    "renew-leaf",
    "start-ca-rotation",
    "issue-leaf-from-new-ca",
    "finish-ca-rotation",
]


class CertificateManagerError(Exception):
    """The certificate manager could not converge."""


class ConflictError(CertificateManagerError):
    """The Secret changed since it was read (or was created by someone else)."""


@dataclass(frozen=True)
class ReplicaAck:
    """What one replica last said it serves, and when."""

    replica: str
    leaf_fingerprint: str
    seen_at: dt.datetime


@dataclass(frozen=True)
class CertificateState:
    """The contents of the Secret: signing CA, trust bundle (current CA first), serving pair."""

    ca: KeyPair
    trusted_ca_pems: tuple[bytes, ...]
    serving: KeyPair
    acks: tuple[ReplicaAck, ...] = ()

    @property
    def bundle_pem(self) -> bytes:
        return b"".join(self.trusted_ca_pems)

    @property
    def rotating(self) -> bool:
        return len(self.trusted_ca_pems) > 1

    @property
    def files(self) -> CertificateFiles:
        return CertificateFiles(ca_bundle_pem=self.bundle_pem, serving=self.serving)


@dataclass(frozen=True)
class ManagerSettings:
    """What to issue and when; times are lifetimes and fractions of them."""

    service: str
    namespace: str
    extra_sans: tuple[str, ...] = ()
    key_type: KeyType = "ecdsa-p256"
    ca_valid_for: dt.timedelta = dt.timedelta(days=5 * 365)
    leaf_valid_for: dt.timedelta = dt.timedelta(days=90)
    # Renew once this fraction of a certificate's life has passed.
    renew_fraction: float = 2 / 3
    # A replica that has not reported for this long is gone.
    ack_ttl: dt.timedelta = dt.timedelta(minutes=5)
    # How long a new CA must sit in the published bundle before it signs the serving cert, and
    # how long a new serving cert must be out before the old CA may leave the bundle.
    min_overlap: dt.timedelta = dt.timedelta(minutes=2)

    def __post_init__(self) -> None:
        if not 0 < self.renew_fraction < 1:
            raise ValueError("renew_fraction must be between 0 and 1")

    @property
    def dns_names(self) -> tuple[str, ...]:
        names = service_dns_names(self.service, self.namespace)
        extra = (n for n in self.extra_sans if n not in names and not _is_ip(n))
        return (*names, *extra)

    @property
    def ip_addresses(self) -> tuple[str, ...]:
        return tuple(n for n in self.extra_sans if _is_ip(n))


@dataclass(frozen=True)
class Observation:
    """What this replica sees outside the Secret when it decides."""

    replica: str
    # SHA-256 of the serving certificate this replica's files hold; None before the first write.
    served_leaf_fingerprint: str | None
    # CA fingerprints present in every webhook's caBundle; None if no configuration exists.
    published_ca_fingerprints: frozenset[str] | None


def fingerprint_pem(cert_pem: bytes) -> str:
    """SHA-256 of the first certificate in ``cert_pem`` (DER), hex encoded."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def fingerprint_bundle(bundle_pem: bytes) -> frozenset[str]:
    """The fingerprints of every certificate in a PEM bundle."""
    if not bundle_pem.strip():
        return frozenset()
    certs = x509.load_pem_x509_certificates(bundle_pem)
    return frozenset(
        hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest() for c in certs
    )


def decide_step(
    state: CertificateState | None,
    *,
    observation: Observation,
    settings: ManagerSettings,
    now: dt.datetime,
) -> Step:
    """The one thing to do next to the certificate state (``none`` when it is fine)."""
    if state is None:
        return "create"
    ca = state.ca.certificate
    leaf = state.serving.certificate
    if now >= ca.not_valid_after_utc:
        # Nothing can overlap with an expired CA: start again.
        return "create"
    leaf_from_ca = _is_issued_by(leaf, ca)
    if state.rotating:
        if not leaf_from_ca:
            published = observation.published_ca_fingerprints
            in_bundle = published is None or fingerprint_pem(state.ca.cert_pem) in published
            settled = now >= _issued_at(ca) + settings.min_overlap
            leaf_expiring = now >= leaf.not_valid_after_utc - settings.min_overlap
            return "issue-leaf-from-new-ca" if (in_bundle and settled) or leaf_expiring else "none"
        if _all_replicas_serve(state, leaf_pem=state.serving.cert_pem, settings=settings, now=now):
            return "finish-ca-rotation"
        return "none"
    if now >= _renew_at(ca, settings.renew_fraction):
        return "start-ca-rotation"
    if (
        not leaf_from_ca
        or now >= _renew_at(leaf, settings.renew_fraction)
        or _sans(leaf) != set(settings.dns_names) | set(settings.ip_addresses)
    ):
        return "renew-leaf"
    return "none"


def apply_step(
    state: CertificateState | None,
    step: Step,
    *,
    settings: ManagerSettings,
    now: dt.datetime,
) -> CertificateState | None:
    """The state after ``step``: new keys and certificates where the step calls for them."""
    if step == "none":
        return state
    if step == "create":
        ca = build_ca(valid_for=settings.ca_valid_for, key_type=settings.key_type, now=now)
        return CertificateState(
            ca=ca,
            trusted_ca_pems=(ca.cert_pem,),
            serving=_issue_leaf(ca, settings=settings, now=now),
            acks=state.acks if state else (),
        )
    if state is None:
        raise ValueError(f"step {step} needs an existing state")
    if step in ("renew-leaf", "issue-leaf-from-new-ca"):
        return replace(state, serving=_issue_leaf(state.ca, settings=settings, now=now))
    if step == "start-ca-rotation":
        ca = build_ca(valid_for=settings.ca_valid_for, key_type=settings.key_type, now=now)
        return replace(state, ca=ca, trusted_ca_pems=(ca.cert_pem, state.ca.cert_pem))
    if step == "finish-ca-rotation":
        return replace(state, trusted_ca_pems=(state.ca.cert_pem,))
    raise ValueError(f"unknown step {step}")


def record_ack(
    state: CertificateState,
    *,
    observation: Observation,
    settings: ManagerSettings,
    now: dt.datetime,
) -> CertificateState:
    """The state with this replica's report refreshed and reports older than ``ack_ttl`` dropped.

    The report is only rewritten when what the replica serves changed or a third of ``ack_ttl``
    has passed, so that steady replicas do not write the Secret on every loop.
    """
    served = observation.served_leaf_fingerprint
    if served is None:
        return state
    own = next((a for a in state.acks if a.replica == observation.replica), None)
    fresh = own is not None and now - own.seen_at < settings.ack_ttl / 3
    if own is not None and own.leaf_fingerprint == served and fresh:
        return state
    live = [
        a
        for a in state.acks
        if a.replica != observation.replica and now - a.seen_at < settings.ack_ttl
    ]
    live.append(ReplicaAck(replica=observation.replica, leaf_fingerprint=served, seen_at=now))
    return replace(state, acks=tuple(sorted(live, key=lambda a: a.replica)))


def plan_state(
    state: CertificateState | None,
    *,
    observation: Observation,
    settings: ManagerSettings,
    now: dt.datetime,
) -> tuple[Step, CertificateState | None]:
    """The step taken and the state to write, or ``None`` when the stored state is right."""
    step = decide_step(state, observation=observation, settings=settings, now=now)
    planned = apply_step(state, step, settings=settings, now=now)
    if planned is None:
        raise CertificateManagerError("no certificate state after planning")
    planned = record_ack(planned, observation=observation, settings=settings, now=now)
    return step, (None if planned == state else planned)


# ---------------------------------------------------------------------------------------------
# The Secret's wire format.


def encode_state(state: CertificateState) -> tuple[dict[str, bytes], dict[str, str]]:
    """The Secret's data (raw bytes, the edge base64-encodes) and annotations for ``state``."""
    data = {
        BUNDLE_KEY: state.bundle_pem,
        CA_CERT_KEY: state.ca.cert_pem,
        CA_KEY_KEY: state.ca.key_pem,
        CERT_KEY: state.serving.cert_pem,
        KEY_KEY: state.serving.key_pem,
    }
    acks = {
        a.replica: {"leaf": a.leaf_fingerprint, "at": a.seen_at.isoformat()} for a in state.acks
    }
    return data, {ACKS_ANNOTATION: json.dumps(acks, sort_keys=True)}


def decode_state(
    data: Mapping[str, bytes], annotations: Mapping[str, str]
) -> CertificateState | None:
    """The state held in a Secret's data and annotations; None if it holds none or junk."""
    try:
        bundle = data[BUNDLE_KEY]
        ca = KeyPair(cert_pem=data[CA_CERT_KEY], key_pem=data[CA_KEY_KEY])
        serving = KeyPair(cert_pem=data[CERT_KEY], key_pem=data[KEY_KEY])
        trusted = tuple(
            c.public_bytes(serialization.Encoding.PEM)
            for c in x509.load_pem_x509_certificates(bundle)
        )
        ca.private_key  # noqa: B018 - parse now: a broken key is no state at all
        serving.private_key  # noqa: B018
        if not trusted or trusted[0] != ca.certificate.public_bytes(serialization.Encoding.PEM):
            return None
    except (KeyError, ValueError, TypeError):
        return None
    return CertificateState(
        ca=ca, trusted_ca_pems=trusted, serving=serving, acks=_decode_acks(annotations)
    )


def _decode_acks(annotations: Mapping[str, str]) -> tuple[ReplicaAck, ...]:
    try:
        raw = json.loads(annotations.get(ACKS_ANNOTATION, "{}"))
        return tuple(
            ReplicaAck(
                replica=name,
                leaf_fingerprint=str(entry["leaf"]),
                seen_at=dt.datetime.fromisoformat(str(entry["at"])),
            )
            for name, entry in sorted(raw.items())
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return ()


# ---------------------------------------------------------------------------------------------
# The edge: the loop that reads, decides, writes.


@dataclass(frozen=True)
class StoredState:
    """The Secret as read: its state (None if absent or empty) and its resourceVersion."""

    state: CertificateState | None
    resource_version: str | None


class CertificateStore(Protocol):
    """Where the state lives and where the trust bundle is published (``certs.cluster``)."""

    def read_state(self) -> StoredState: ...

    def write_state(self, state: CertificateState, *, resource_version: str | None) -> None:
        """Create or replace the state; raise ``ConflictError`` if the version moved on."""

    def read_published_ca_fingerprints(self) -> frozenset[str] | None: ...

    def publish_ca_bundle(self, bundle_pem: bytes) -> None: ...


@dataclass
class CertificateManager:
    """Runs the decide-write-publish loop for one replica."""

    settings: ManagerSettings
    store: CertificateStore
    directory: Path
    replica: str
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    max_rounds: int = 20

    def reconcile_once(self) -> CertificateState:
        """Bring the Secret, the files and the caBundle in line; return the state served."""
        for _ in range(self.max_rounds):
            stored = self.store.read_state()
            observation = Observation(
                replica=self.replica,
                served_leaf_fingerprint=self._served_fingerprint(),
                published_ca_fingerprints=self.store.read_published_ca_fingerprints(),
            )
            step, planned = plan_state(
                stored.state, observation=observation, settings=self.settings, now=self.clock()
            )
            if planned is not None:
                try:
                    self.store.write_state(planned, resource_version=stored.resource_version)
                except ConflictError:
                    log.info("certificate secret changed under us; reading it again")
                    # A little jitter, so replicas that collided do not collide again.
                    time.sleep(random.uniform(0, 0.05))
                    continue
                if step != "none":
                    log.info("certificates: %s", step)
            state = planned or stored.state
            if state is None:
                raise CertificateManagerError("no certificate state after planning")
            files_changed = self._write_files(state)
            self.store.publish_ca_bundle(state.bundle_pem)
            # New files mean a new report to make (what this replica serves): one more round.
            if planned is None and not files_changed:
                return state
        raise CertificateManagerError(f"no agreement on the secret after {self.max_rounds} rounds")

    def run(self, *, stop: threading.Event, interval: dt.timedelta) -> None:
        """Reconcile every ``interval`` until ``stop`` is set; errors are logged, not raised."""
        while not stop.wait(interval.total_seconds()):
            try:
                self.reconcile_once()
            except Exception:
                log.exception("certificate reconcile failed; retrying in %s", interval)

    def _served_fingerprint(self) -> str | None:
        files = read_certificate_files(self.directory)
        return fingerprint_pem(files.serving.cert_pem) if files else None

    def _write_files(self, state: CertificateState) -> bool:
        if read_certificate_files(self.directory) == state.files:
            return False
        publish_certificate_files(self.directory, files=state.files)
        return True


def start_manager_thread(
    manager: CertificateManager, *, interval: dt.timedelta
) -> tuple[threading.Thread, threading.Event]:
    """Run ``manager`` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=manager.run,
        kwargs={"stop": stop, "interval": interval},
        name="mlgate-cert-manager",
        daemon=True,
    )
    thread.start()
    return thread, stop


def _issue_leaf(ca: KeyPair, *, settings: ManagerSettings, now: dt.datetime) -> KeyPair:
    return build_serving_cert(
        ca=ca,
        dns_names=list(settings.dns_names),
        ip_addresses=list(settings.ip_addresses),
        valid_for=settings.leaf_valid_for,
        key_type=settings.key_type,
        now=now,
    )


def _issued_at(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_before_utc + CLOCK_SKEW


def _renew_at(cert: x509.Certificate, fraction: float) -> dt.datetime:
    issued = _issued_at(cert)
    return issued + (cert.not_valid_after_utc - issued) * fraction


def _is_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(sans.get_values_for_type(x509.DNSName)) | ips


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _all_replicas_serve(
    state: CertificateState, *, leaf_pem: bytes, settings: ManagerSettings, now: dt.datetime
) -> bool:
    if now < _issued_at(x509.load_pem_x509_certificate(leaf_pem)) + settings.min_overlap:
        return False
    live = [a for a in state.acks if now - a.seen_at < settings.ack_ttl]
    wanted = fingerprint_pem(leaf_pem)
    return bool(live) and all(a.leaf_fingerprint == wanted for a in live)
