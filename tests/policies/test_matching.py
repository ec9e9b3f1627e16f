"""Which policies a request selects: namespace globs, kinds, namespace and workload labels."""

from __future__ import annotations

from typing import Any

import pytest

from policies.context import AdmissionContext
from policies.matching import select_policies
from policies.model import LabelSelector, Match, NamespaceMatch, Policy
from tests import contexts

DEPLOYMENT = {
    "kind": "Deployment",
    "metadata": {"name": "model", "labels": {"tier": "prod", "team": 7}},
    "spec": {"template": {"metadata": {}, "spec": {"containers": []}}},
}
TIER_PROD = LabelSelector(match_labels=(("tier", "prod"),))


def make_ctx(**overrides: Any) -> AdmissionContext:
    return contexts.make_ctx(**{"obj": DEPLOYMENT, **overrides})


@pytest.mark.parametrize(
    ("match", "ctx", "selected"),
    [
        pytest.param(Match(), make_ctx(), True, id="default-match-every-pod-bearing-kind"),
        pytest.param(
            Match(), make_ctx(kind="ConfigMap", obj={"kind": "ConfigMap"}), False, id="no-pod-kind"
        ),
        pytest.param(
            Match(namespaces=NamespaceMatch(include=("*-prod",))), make_ctx(), True, id="ns-glob"
        ),
        pytest.param(
            Match(namespaces=NamespaceMatch(exclude=("ml-*",))), make_ctx(), False, id="ns-exclude"
        ),
        pytest.param(Match(kinds=("Pod",)), make_ctx(), False, id="other-kind"),
        pytest.param(Match(kinds=("ConfigMap",)), make_ctx(kind="ConfigMap"), True, id="kinds"),
        pytest.param(
            Match(kinds=("Deployment",)),
            make_ctx(kind="Scale", sub_resource="scale", obj={"kind": "Scale"}),
            True,
            id="scale-matches-the-workload-kind",
        ),
        pytest.param(
            Match(namespace_selector=TIER_PROD),
            make_ctx(namespace_labels={"tier": "prod"}),
            True,
            id="namespace-labels",
        ),
        pytest.param(
            Match(namespace_selector=TIER_PROD),
            make_ctx(namespace_labels=None),
            False,
            id="unknown-namespace-labels-match-nothing",
        ),
        pytest.param(
            Match(namespace_selector=LabelSelector()),
            make_ctx(namespace_labels={}),
            True,
            id="empty-namespace-selector",
        ),
        pytest.param(Match(selector=TIER_PROD), make_ctx(), True, id="workload-labels"),
        pytest.param(
            Match(selector=LabelSelector(match_labels=(("team", "7"),))),
            make_ctx(),
            False,
            id="non-string-label-is-ignored",
        ),
        pytest.param(
            Match(selector=TIER_PROD),
            make_ctx(operation="DELETE", obj=None, old_obj=DEPLOYMENT),
            True,
            id="delete-uses-the-old-object",
        ),
        pytest.param(
            Match(selector=TIER_PROD),
            make_ctx(kind="Scale", sub_resource="scale", obj={}, scale_target=None),
            False,
            id="scale-without-its-workload-has-no-labels",
        ),
    ],
)
def test_policy_is_selected_when_every_part_of_its_match_holds(
    match: Match, ctx: AdmissionContext, selected: bool
) -> None:
    policy = Policy(name="p", match=match)
    assert select_policies(ctx, [policy]) == ([policy] if selected else [])


def test_selected_policies_keep_the_set_order() -> None:
    policies = [
        Policy(name="a"),
        Policy(name="b", match=Match(kinds=("Pod",))),
        Policy(name="c", match=Match(selector=TIER_PROD)),
        Policy(name="d", match=Match(selector=LabelSelector(match_labels=(("tier", "dev"),)))),
        Policy(name="e"),
    ]
    assert [p.name for p in select_policies(make_ctx(), policies)] == ["a", "c", "e"]
