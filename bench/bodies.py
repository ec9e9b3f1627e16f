"""The request bodies every case sends: AdmissionReviews captured from a real kube-apiserver.

Each webhook gets three bodies, sent in turn: a model Deployment, a GPU Deployment and a model
Pod. On ``/validate`` the two Deployments are denied (production namespace, no validation
annotations; the GPU one also uses ``:latest``), which exercises the denial message and the
audit records; the Pod is allowed with warnings, which are recorded too: every request sent
to ``/validate`` leaves audit records (3.7 on average), as every captured workload would
under the default policies (none carries the ML pipeline's validation annotations).

Every request carries a uid of its own (``Body.stamp``), as the API server's do: with the same
uid sent over and over, the audit store would find each record already written and skip it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import orjson

ROOT = Path(__file__).resolve().parent.parent
REVIEWS = ROOT / "tests" / "fixtures" / "admission-reviews"

Webhook = Literal["mutate", "validate"]
WEBHOOKS: tuple[Webhook, ...] = ("mutate", "validate")

FIXTURES: dict[Webhook, tuple[str, ...]] = {
    "mutate": (
        "001-mutate-create-deployment-recommendation-model.json",
        "003-mutate-create-deployment-image-analysis-model.json",
        "007-mutate-create-pod-churn-model.json",
    ),
    "validate": (
        "002-validate-create-deployment-recommendation-model.json",
        "004-validate-create-deployment-image-analysis-model.json",
        "008-validate-create-pod-churn-model.json",
    ),
}


# The last group of a request uid (a UUID) is replaced by a counter: 12 hexadecimal digits.
STAMP_DIGITS = 12


@dataclass(frozen=True)
class Body:
    name: str
    path: Path
    data: bytes

    @cached_property
    def uid(self) -> str:
        """The captured request's uid (parsed once: ``stamp`` runs for every request sent)."""
        uid: str = orjson.loads(self.data)["request"]["uid"]
        return uid

    def stamp(self, number: int) -> bytes:
        """The body with a request uid of its own: the captured one ending in ``number``."""
        uid = self.uid.encode()
        stamped = uid[:-STAMP_DIGITS] + b"%0*x" % (STAMP_DIGITS, number % 16**STAMP_DIGITS)
        return self.data.replace(uid, stamped, 1)


def load_bodies(webhook: Webhook) -> tuple[Body, ...]:
    """The bodies sent to ``/<webhook>``, in the order they are cycled through."""
    return tuple(
        Body(
            name=name.removesuffix(".json"), path=REVIEWS / name, data=(REVIEWS / name).read_bytes()
        )
        for name in FIXTURES[webhook]
    )
