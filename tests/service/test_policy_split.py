"""Each webhook matches only the policies it acts on: /mutate those that turn on a mutator,
/validate those that turn on a check; a new policy set is split again."""

from __future__ import annotations

import datetime as dt

from bench.stages import StaticPolicies
from policies.loader import default_policy_dir, load_policy_dir
from policies.model import (
    ImageSettings,
    MutateSpec,
    Policy,
    PolicySet,
    SecurityContextSettings,
    ValidateSpec,
)
from tests.harness import REVIEWS
from webhook.admission import Admitter, split_by_webhook
from webhook.review import parse_review

MUTATES = Policy("mutates", mutate=MutateSpec(security_context=SecurityContextSettings()))
CHECKS = Policy("checks", validate=ValidateSpec(images=ImageSettings()))
BOTH = Policy(
    "both",
    mutate=MutateSpec(security_context=SecurityContextSettings()),
    validate=ValidateSpec(images=ImageSettings()),
)
DISABLED = Policy("disabled", mutate=MutateSpec(security_context=SecurityContextSettings(False)))
NOTHING = Policy("nothing")


def test_split_keeps_set_order_and_drops_what_a_webhook_does_not_use() -> None:
    split = split_by_webhook((CHECKS, MUTATES, NOTHING, BOTH, DISABLED))

    assert [p.name for p in split["mutate"]] == ["mutates", "both"]
    assert [p.name for p in split["validate"]] == ["checks", "both"]


def test_default_policies_split() -> None:
    split = split_by_webhook(load_policy_dir(default_policy_dir()).policies)

    assert [p.name for p in split["mutate"]] == ["model-defaults"]
    assert "model-defaults" not in [p.name for p in split["validate"]]


def test_admitter_splits_each_new_set_again() -> None:
    source = StaticPolicies(PolicySet((MUTATES,)))
    admitter = Admitter(policies=source, clock=lambda: dt.datetime(2026, 11, 28, tzinfo=dt.UTC))
    request = parse_review(
        (REVIEWS / "001-mutate-create-deployment-recommendation-model.json").read_bytes()
    )

    assert admitter.admit("mutate", request).decision == "patch"
    assert admitter.admit("validate", request).note == "no validating policy matches"

    source.current = PolicySet((CHECKS,))
    assert admitter.admit("mutate", request).note == "no mutating policy matches"
    assert admitter.admit("validate", request).decision in ("allow", "deny")
