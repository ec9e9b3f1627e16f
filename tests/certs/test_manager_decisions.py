"""The certificate manager's pure decisions: which step, given the Secret, the time and the view.

The rotation walk at the end plays the whole CA rotation with two replicas and checks, at every
moment, that the API server (trusting the published caBundle) trusts what each replica serves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import pytest
from cryptography import x509
from cryptography.x509 import verification

from certs.authority import build_ca, build_serving_cert
from certs.manager import (
    CertificateState,
    ManagerSettings,
    Observation,
    ReplicaAck,
    Step,
    apply_step,
    decide_step,
    decode_state,
    encode_state,
    fingerprint_bundle,
    fingerprint_pem,
    plan_state,
    record_ack,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)
SETTINGS = ManagerSettings(
    service="mlgate",
    namespace="mlgate-system",
    ca_valid_for=365 * DAY,
    leaf_valid_for=90 * DAY,
    min_overlap=2 * MINUTE,
    ack_ttl=5 * MINUTE,
)


def fresh_state(now: dt.datetime = T0) -> CertificateState:
    state = apply_step(None, "create", settings=SETTINGS, now=now)
    assert state is not None
    return state


STATE = fresh_state()
NEW_CA = build_ca(valid_for=365 * DAY, now=T0 + 250 * DAY)
# Rotation started at day 250: new CA first in the bundle, leaf still from the old CA (renewed
# at day 240).
OLD_LEAF = build_serving_cert(
    ca=STATE.ca, dns_names=list(SETTINGS.dns_names), valid_for=90 * DAY, now=T0 + 240 * DAY
)
ROTATING = replace(
    STATE, ca=NEW_CA, trusted_ca_pems=(NEW_CA.cert_pem, STATE.ca.cert_pem), serving=OLD_LEAF
)
NEW_LEAF = build_serving_cert(
    ca=NEW_CA, dns_names=list(SETTINGS.dns_names), valid_for=90 * DAY, now=T0 + 250 * DAY
)
ROTATED_LEAF = replace(ROTATING, serving=NEW_LEAF)
NEW_FP = fingerprint_pem(NEW_LEAF.cert_pem)
OLD_FP = fingerprint_pem(OLD_LEAF.cert_pem)


def observed(published: frozenset[str] | None = None, served: str | None = None) -> Observation:
    return Observation(
        replica="a", served_leaf_fingerprint=served, published_ca_fingerprints=published
    )


def acks(*entries: tuple[str, str, dt.datetime]) -> tuple[ReplicaAck, ...]:
    return tuple(ReplicaAck(replica=r, leaf_fingerprint=f, seen_at=t) for r, f, t in entries)


NO_VIEW = observed()


@dataclass(frozen=True)
class Case:
    state: CertificateState | None
    now: dt.datetime
    expected: Step
    observation: Observation = NO_VIEW
    settings: ManagerSettings = SETTINGS


AFTER_ROTATION = T0 + 250 * DAY + 10 * MINUTE
CASES = {
    "nothing-stored-creates": Case(None, T0, "create"),
    "fresh-state-is-left-alone": Case(STATE, T0 + DAY, "none"),
    "leaf-past-two-thirds-is-renewed": Case(STATE, T0 + 61 * DAY, "renew-leaf"),
    "leaf-short-of-two-thirds-is-kept": Case(STATE, T0 + 59 * DAY, "none"),
    "new-san-renews-the-leaf": Case(
        STATE, T0 + DAY, "renew-leaf", settings=replace(SETTINGS, extra_sans=("mlgate.example",))
    ),
    "new-ip-san-renews-the-leaf": Case(
        STATE, T0 + DAY, "renew-leaf", settings=replace(SETTINGS, extra_sans=("10.0.0.7",))
    ),
    "leaf-from-a-foreign-ca-is-renewed": Case(
        replace(STATE, serving=NEW_LEAF), T0 + DAY, "renew-leaf"
    ),
    "ca-past-two-thirds-starts-a-rotation": Case(STATE, T0 + 250 * DAY, "start-ca-rotation"),
    "expired-ca-starts-over": Case(STATE, T0 + 366 * DAY, "create"),
    "new-ca-not-yet-in-the-cabundle-waits": Case(
        ROTATING, AFTER_ROTATION, "none", observed(published=fingerprint_bundle(STATE.ca.cert_pem))
    ),
    "new-ca-published-but-too-recently-waits": Case(
        ROTATING,
        T0 + 250 * DAY + MINUTE,
        "none",
        observed(published=fingerprint_bundle(ROTATING.bundle_pem)),
    ),
    "new-ca-published-and-settled-signs-the-leaf": Case(
        ROTATING,
        AFTER_ROTATION,
        "issue-leaf-from-new-ca",
        observed(published=fingerprint_bundle(ROTATING.bundle_pem)),
    ),
    "no-webhook-configuration-to-wait-for": Case(
        ROTATING, AFTER_ROTATION, "issue-leaf-from-new-ca", observed(published=None)
    ),
    "old-leaf-about-to-expire-is-replaced-anyway": Case(
        ROTATING, T0 + 330 * DAY, "issue-leaf-from-new-ca", observed(published=frozenset())
    ),
    "every-live-replica-on-new-leaf-finishes": Case(
        replace(
            ROTATED_LEAF,
            acks=acks(("a", NEW_FP, AFTER_ROTATION), ("b", NEW_FP, AFTER_ROTATION - MINUTE)),
        ),
        AFTER_ROTATION,
        "finish-ca-rotation",
    ),
    "a-live-replica-on-the-old-leaf-keeps-the-old-ca": Case(
        replace(
            ROTATED_LEAF,
            acks=acks(("a", NEW_FP, AFTER_ROTATION), ("b", OLD_FP, AFTER_ROTATION - MINUTE)),
        ),
        AFTER_ROTATION,
        "none",
    ),
    "a-gone-replica-does-not-hold-the-rotation": Case(
        replace(
            ROTATED_LEAF,
            acks=acks(("a", NEW_FP, AFTER_ROTATION), ("b", OLD_FP, AFTER_ROTATION - 6 * MINUTE)),
        ),
        AFTER_ROTATION,
        "finish-ca-rotation",
    ),
    "no-replica-reported-keeps-the-old-ca": Case(ROTATED_LEAF, AFTER_ROTATION, "none"),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_decide_step(case: Case) -> None:
    step = decide_step(
        case.state, observation=case.observation, settings=case.settings, now=case.now
    )
    assert step == case.expected


@pytest.mark.parametrize(
    ("own", "now", "rewritten"),
    [
        (None, T0, True),
        (("a", OLD_FP, T0), T0 + MINUTE, False),
        (("a", OLD_FP, T0), T0 + 2 * MINUTE, True),
        (("a", NEW_FP, T0), T0 + MINUTE, True),
    ],
    ids=["first-report", "fresh-report-kept", "report-refreshed", "new-leaf-reported-at-once"],
)
def test_replica_reports_only_when_needed(
    own: tuple[str, str, dt.datetime] | None, now: dt.datetime, rewritten: bool
) -> None:
    state = replace(STATE, acks=acks(own) if own else ())
    after = record_ack(state, observation=observed(served=OLD_FP), settings=SETTINGS, now=now)
    assert (after != state) is rewritten
    assert [(a.replica, a.leaf_fingerprint) for a in after.acks] == [("a", OLD_FP)]


def test_stale_reports_of_other_replicas_are_dropped_when_reporting() -> None:
    state = replace(STATE, acks=acks(("gone", OLD_FP, T0), ("live", OLD_FP, T0 + 4 * MINUTE)))
    after = record_ack(
        state, observation=observed(served=OLD_FP), settings=SETTINGS, now=T0 + 6 * MINUTE
    )
    assert [a.replica for a in after.acks] == ["a", "live"]


@pytest.mark.parametrize(
    "state",
    [STATE, replace(ROTATED_LEAF, acks=acks(("a", NEW_FP, T0), ("b", OLD_FP, T0)))],
    ids=["plain", "rotating-with-reports"],
)
def test_secret_encoding_round_trips(state: CertificateState) -> None:
    data, annotations = encode_state(state)
    assert decode_state(data, annotations) == state


@pytest.mark.parametrize(
    "data",
    [{}, {"ca.crt": b"junk"}, {**encode_state(STATE)[0], "tls.key": b"not a key"}],
    ids=["empty-secret", "junk", "broken-key"],
)
def test_unreadable_secret_holds_no_state(data: dict[str, bytes]) -> None:
    assert decode_state(data, {}) is None


def trusted(leaf_pem: bytes, *, bundle_pem: bytes, at: dt.datetime) -> bool:
    """Would an API server whose caBundle is ``bundle_pem`` accept ``leaf_pem`` at ``at``?"""
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(x509.load_pem_x509_certificates(bundle_pem)))
        .time(at)
        .build_server_verifier(x509.DNSName("mlgate.mlgate-system.svc"))
    )
    try:
        verifier.verify(x509.load_pem_x509_certificate(leaf_pem), [])
    except verification.VerificationError:
        return False
    return True


def test_ca_rotation_walk_never_leaves_a_replica_untrusted() -> None:
    """Two replicas poll every minute, one lagging by 30 s; the caBundle follows the Secret.

    Each replica serves what the Secret held when it last polled; the published caBundle is what
    the last poller wrote. At every poll, both replicas' leaves must verify under it.
    """
    now = T0
    secret: CertificateState | None = None
    served: dict[str, bytes] = {}
    published = b""
    steps: list[Step] = []
    end = T0 + 400 * DAY
    # Jump in days, then poll minute by minute around each change.
    while now < end:
        for replica, offset in (("a", dt.timedelta()), ("b", dt.timedelta(seconds=30))):
            at = now + offset
            observation = Observation(
                replica=replica,
                served_leaf_fingerprint=fingerprint_pem(served[replica])
                if replica in served
                else None,
                published_ca_fingerprints=fingerprint_bundle(published) if published else None,
            )
            step, planned = plan_state(secret, observation=observation, settings=SETTINGS, now=at)
            if step != "none":
                steps.append(step)
            secret = planned or secret
            assert secret is not None
            served[replica] = secret.serving.cert_pem
            published = secret.bundle_pem
            for leaf in served.values():
                assert trusted(leaf, bundle_pem=published, at=at), (step, at)
        busy = secret is not None and secret.rotating
        now += MINUTE if busy or steps[-1:] == ["start-ca-rotation"] else DAY
    assert steps[0] == "create"
    rotation = steps.index("start-ca-rotation")
    assert steps[rotation : rotation + 3] == [
        "start-ca-rotation",
        "issue-leaf-from-new-ca",
        "finish-ca-rotation",
    ]
    assert "renew-leaf" in steps[1:rotation]
    assert secret is not None
    assert not secret.rotating
