"""Policy test suites: the shipped ones pass (so the default policies cannot drift from what the
README promises), every mutated object they produce is a valid Kubernetes object, and a suite
whose expectations are wrong fails with a reason that says which and why."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from policies.loader import default_policy_dir
from tests.harness import ROOT
from tests.k8s_schema import validate_k8s
from webhook.policytest.manifests import read_manifests
from webhook.policytest.runner import load_policies, run_manifests
from webhook.policytest.suite import SuiteError, format_table, load_suite_file, run_suite

DEFAULTS_SUITE = ROOT / "policies" / "suites" / "defaults.suite.yaml"
TRICKY_SUITE = ROOT / "tests" / "policy-suites" / "tricky" / "tricky.suite.yaml"
EXAMPLES = ROOT / "policies" / "examples"


@pytest.mark.parametrize(
    "suite_file",
    [
        pytest.param(DEFAULTS_SUITE, id="default-policies-on-the-examples"),
        pytest.param(TRICKY_SUITE, id="tricky-cases"),
    ],
)
def test_shipped_suite_passes(suite_file: Path) -> None:
    results = [r for suite in load_suite_file(suite_file) for r in run_suite(suite).results]
    assert results
    assert all(r.passed for r in results), format_table(results)


def test_every_example_workload_has_a_case_in_the_defaults_suite() -> None:
    (suite,) = load_suite_file(DEFAULTS_SUITE)
    manifests = read_manifests([EXAMPLES]).manifests
    assert len(manifests) == len(suite.cases) >= 9


@pytest.mark.parametrize(
    ("manifests", "policies"),
    [
        pytest.param([EXAMPLES], [default_policy_dir()], id="examples"),
        pytest.param(
            [TRICKY_SUITE.parent / "manifests"],
            [default_policy_dir(), TRICKY_SUITE.parent / "policies" / "40-gold-tier-digests.yaml"],
            id="tricky",
        ),
    ],
)
def test_every_mutated_object_is_valid_against_the_kubernetes_schema(
    manifests: list[Path], policies: list[Path]
) -> None:
    found = read_manifests(manifests)
    reports, errors = run_manifests(found.manifests, policy_set=load_policies(policies))
    assert not errors
    mutated = [r for r in reports if r.patch]
    assert len(mutated) >= 6
    for report in mutated:
        validate_k8s(report.mutated)


# --- a suite that expects the wrong thing fails, and says why ----------------------------------

BASE_CASE = """\
object: Deployment/ml-production/recommendation-model
verdict: denied
"""


def write_suite(folder: Path, cases: str, *, extra_spec: str = "") -> Path:
    suite = folder / "s.suite.yaml"
    suite.write_text(
        "apiVersion: mlgate.io/v1alpha1\nkind: PolicyTestSuite\nmetadata: {name: t}\nspec:\n"
        f"  policies: [{default_policy_dir()}]\n"
        f"  manifests: [{EXAMPLES / '01-recommendation-model.yaml'}]\n"
        + textwrap.indent(extra_spec, "  ")
        + "  cases:\n"
        + textwrap.indent(cases, "    ")
    )
    return suite


def failures_of(suite_file: Path) -> list[str]:
    return [
        f for s in load_suite_file(suite_file) for r in run_suite(s).results for f in r.failures
    ]


@pytest.mark.parametrize(
    ("cases", "expected_failure"),
    [
        pytest.param(
            "- object: Deployment/recommendation-model\n  verdict: allowed\n",
            "expected allowed, got denied: mlgate denied deployment",
            id="wrong-verdict",
        ),
        pytest.param(
            "- " + BASE_CASE.replace("\n", "\n  ") + "messages: [images.no-latest]\n",
            "no message contains 'images.no-latest'; the messages are:",
            id="missing-message",
        ),
        pytest.param(
            "- " + BASE_CASE.replace("\n", "\n  ") + "absentMessages: [labels.accuracy]\n",
            "a message contains 'labels.accuracy'",
            id="message-that-must-be-absent",
        ),
        pytest.param(
            "- " + BASE_CASE.replace("\n", "\n  ") + "changed: false\n",
            "expected no patch, got 7 operations",
            id="unexpected-patch",
        ),
        pytest.param(
            "- " + BASE_CASE.replace("\n", "\n  ") + "mutated: {spec: {replicas: 4}}\n",
            "mutated object: spec.replicas: expected 4, got 3",
            id="mutated-subset-differs",
        ),
        pytest.param(
            "- "
            + BASE_CASE.replace("\n", "\n  ")
            + "mutated: {metadata: {annotations: {mlgate.io/validated: 'true'}}}\n",
            "mutated object: metadata.annotations.mlgate.io/validated: missing",
            id="mutated-subset-missing-key",
        ),
        pytest.param(
            "- " + BASE_CASE.replace("\n", "\n  ") + "mutatedFile: original.yaml\n",
            "mutatedFile original.yaml: metadata.annotations: not expected",
            id="mutated-file-is-compared-exactly",
        ),
        pytest.param(
            BASE_CASE.replace("object: ", "- object: ").replace("verdict", "  verdict")
            + "- object: Pod/nope\n  verdict: allowed\n",
            "no object Pod/nope in the manifests",
            id="case-naming-no-object",
        ),
        pytest.param(
            "- object: Pod/nope\n  verdict: allowed\n",
            "no case for this object",
            id="object-without-case",
        ),
    ],
)
def test_a_wrong_expectation_fails_with_the_reason(
    tmp_path: Path, cases: str, expected_failure: str
) -> None:
    (tmp_path / "original.yaml").write_text((EXAMPLES / "01-recommendation-model.yaml").read_text())
    failures = failures_of(write_suite(tmp_path, cases))
    assert any(expected_failure in f for f in failures), failures


def test_a_bad_manifest_in_a_suite_is_a_failed_row(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n")
    suite = write_suite(tmp_path, "- " + BASE_CASE.replace("\n", "\n  "))
    suite.write_text(
        suite.read_text().replace("manifests: [", f"manifests: [{tmp_path / 'bad.yaml'}, ")
    )
    failures = failures_of(suite)
    assert failures == ["a Pod without containers: spec is missing"]


@pytest.mark.parametrize(
    ("cases", "extra_spec", "message"),
    [
        pytest.param(
            "- object: Pod/x\n  verdict: maybe\n",
            "",
            "spec.cases[0].verdict: expected one of",
            id="bad-verdict",
        ),
        pytest.param(
            "- object: x\n  verdict: allowed\n",
            "",
            "spec.cases[0].object: expected Kind/name",
            id="bad-object",
        ),
        pytest.param(
            "- object: Pod/x\n  verdict: allowed\n  mesages: [x]\n",
            "",
            "spec.cases[0].mesages: unknown field",
            id="unknown-case-field",
        ),
        pytest.param(
            "- object: Pod/x\n  verdict: allowed\n",
            "polices: [x]\n",
            "spec: unknown field 'polices'",
            id="unknown-spec-field",
        ),
        pytest.param(
            "- object: Pod/x\n  verdict: allowed\n",
            "now: yesterday\n",
            "spec.now: 'yesterday' is not an ISO 8601 time",
            id="bad-now",
        ),
        pytest.param("[]\n", "", "spec.cases: expected a non-empty list", id="no-cases"),
    ],
)
def test_a_malformed_suite_is_an_error_naming_the_field(
    tmp_path: Path, cases: str, extra_spec: str, message: str
) -> None:
    suite = write_suite(tmp_path, cases, extra_spec=extra_spec)
    if cases == "[]\n":
        suite.write_text(suite.read_text().replace("  cases:\n    []", "  cases: []"))
    with pytest.raises(SuiteError, match="document 1") as raised:
        load_suite_file(suite)
    assert str(raised.value).startswith(f"{suite}: ")
    assert message in str(raised.value)


def test_broken_policies_in_a_suite_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad-policies").mkdir()
    (tmp_path / "bad-policies" / "p.yaml").write_text(
        "apiVersion: mlgate.io/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec: {matc: {}}\n"
    )
    suite = write_suite(tmp_path, "- " + BASE_CASE.replace("\n", "\n  "))
    suite.write_text(suite.read_text().replace(str(default_policy_dir()), "bad-policies"))
    (loaded,) = load_suite_file(suite)
    with pytest.raises(SuiteError, match=r"p\.yaml:4"):
        run_suite(loaded)
