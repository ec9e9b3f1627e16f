"""The request bodies every case sends: AdmissionReviews captured from a real kube-apiserver.

Each case sends the three bodies of a mix in turn (``MIXES``):

- ``mutate``: a model Deployment, a GPU Deployment and a model Pod, to ``/mutate``.
- ``validate``: the mix issue 8 names, to ``/validate``: a model Deployment and a GPU Pod that
  pass the default policies (they carry the ML pipeline's validation annotations: allowed,
  nothing recorded) and a workload that is denied (a GPU Deployment in production with a
  ``:latest`` image and no validation annotations: a denial message and five audit records).
- ``validate-audited``: the worst case for ``/validate``, every request recorded: the model
  Deployment and the GPU Deployment denied in production (no validation annotations; the GPU
  one also uses ``:latest``), and a model Pod allowed with three warnings (recorded too): 3.7
  audit records per request on average. No workload of the first capture passes the default
  policies, so this was the only ``/validate`` mix until the validated ones were captured.

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


@dataclass(frozen=True)
class Mix:
    """The bodies one case sends to one webhook, in the order they are cycled through."""

    name: str
    webhook: Webhook
    label: str  # as the tables show it
    fixtures: tuple[str, ...]


MIXES: dict[str, Mix] = {
    mix.name: mix
    for mix in (
        Mix(
            "mutate",
            "mutate",
            "/mutate",
            (
                "001-mutate-create-deployment-recommendation-model.json",
                "003-mutate-create-deployment-image-analysis-model.json",
                "007-mutate-create-pod-churn-model.json",
            ),
        ),
        Mix(
            "validate",
            "validate",
            "/validate",
            (
                "036-validate-create-deployment-recommendation-model-validated.json",
                "038-validate-create-pod-image-analysis-gpu.json",
                "004-validate-create-deployment-image-analysis-model.json",
            ),
        ),
        Mix(
            "validate-audited",
            "validate",
            "/validate, every request audited",
            (
                "002-validate-create-deployment-recommendation-model.json",
                "004-validate-create-deployment-image-analysis-model.json",
                "008-validate-create-pod-churn-model.json",
            ),
        ),
    )
}


# The last group of a request uid (a UUID) is replaced by a counter: 12 hexadecimal digits.
STAMP_DIGITS = 12


@dataclass(frozen=True)
class Body:
    name: str  # the fixture's, without .json
    data: bytes  # as sent

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


def load_bodies(mix: str) -> tuple[Body, ...]:
    """The bodies of ``MIXES[mix]``, in the order they are cycled through, as on the wire."""
    return tuple(
        Body(name=name.removesuffix(".json"), data=wire_body(REVIEWS / name))
        for name in MIXES[mix].fixtures
    )


def wire_body(path: Path) -> bytes:
    """A captured review as the API server sent it: compact JSON and a newline.

    NOTE: the fixtures are stored indented with sorted keys (tests/fixtures/README.md), about
    1.8 times the size of what was on the wire; only the order of the keys differs from it now.
    """
    return orjson.dumps(orjson.loads(path.read_bytes())) + b"\n"
