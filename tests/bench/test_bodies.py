"""The benchmark's mixes of bodies are what ``bench/bodies.py`` says, under the default policies.

The ``/validate`` figures mean something only if the bodies are decided as described: the
issue's mix admits two workloads (nothing recorded) and denies one; the worst case records
every request.
"""

from __future__ import annotations

import orjson
import pytest

from bench.bodies import MIXES, REVIEWS, load_bodies
from policies.loader import default_policy_dir, load_policy_dir
from policies.model import PolicySet
from webhook.admission import Admitter, Outcome
from webhook.review import parse_review


class DefaultPolicies:
    def __init__(self) -> None:
        self.current: PolicySet | None = load_policy_dir(default_policy_dir())


def decide(mix: str) -> list[Outcome]:
    admitter = Admitter(policies=DefaultPolicies())
    webhook = MIXES[mix].webhook
    return [admitter.admit(webhook, parse_review(body.data)) for body in load_bodies(mix)]


def test_the_issue_mix_admits_a_model_deployment_and_a_gpu_pod_and_denies_a_workload() -> None:
    outcomes = decide("validate")

    assert [o.decision for o in outcomes] == ["allow", "allow", "deny"]
    warnings = [o.review["response"].get("warnings") for o in outcomes[:2]]
    assert warnings == [None, None]  # admitted without a warning
    assert [len(o.records) for o in outcomes] == [0, 0, 5]
    objects = [parse_review(body.data).obj or {} for body in load_bodies("validate")]
    assert [obj["kind"] for obj in objects] == ["Deployment", "Pod", "Deployment"]
    gpu_limits = objects[1]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu_limits["nvidia.com/gpu"] == "1"


def test_every_request_of_the_audited_mix_leaves_records() -> None:
    outcomes = decide("validate-audited")

    assert [o.decision for o in outcomes] == ["deny", "deny", "allow"]
    assert all(o.records for o in outcomes)
    assert sum(len(o.records) for o in outcomes) / len(outcomes) == pytest.approx(3.7, abs=0.05)


@pytest.mark.parametrize("mix", list(MIXES))
def test_each_mix_sends_reviews_captured_for_its_webhook(mix: str) -> None:
    bodies = load_bodies(mix)

    assert len(bodies) == 3
    for body in bodies:
        assert body.name.split("-")[1] == MIXES[mix].webhook
        assert parse_review(body.data).operation == "CREATE"


@pytest.mark.parametrize("mix", list(MIXES))
def test_each_body_is_sent_as_the_api_server_sent_it_compact(mix: str) -> None:
    for body in load_bodies(mix):
        stored = (REVIEWS / f"{body.name}.json").read_bytes()
        assert orjson.loads(body.data) == orjson.loads(stored)
        assert body.data.endswith(b"}\n")
        assert b"\n" not in body.data[:-1]
        assert len(body.data) < len(stored) / 1.5  # the stored file is indented
