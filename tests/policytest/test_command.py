"""``mlgate policy test`` from the command line: exit status, the four outputs, the offline
cluster flags, and stdin, as an admin or a CI pipeline uses it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonpatch
import pytest
import yaml

from policies.loader import default_policy_dir
from tests.harness import ROOT
from tests.k8s_schema import validate_k8s
from webhook.cli import main

EXAMPLES = ROOT / "policies" / "examples"
TRICKY = ROOT / "tests" / "policy-suites" / "tricky"
ALLOWED = EXAMPLES / "02-validated-model.yaml"
WARNED = EXAMPLES / "04-churn-model-pod.yaml"
DENIED = EXAMPLES / "01-recommendation-model.yaml"
BARE_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: scratch, labels: {app: scratch, version: "1.0"}}
spec:
  containers: [{name: app, image: "registry.example.com/scratch:1.0"}]
"""


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["policy", "test", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param([str(ALLOWED)], 0, id="allowed-is-0"),
        pytest.param([str(WARNED)], 0, id="warned-is-0"),
        pytest.param([str(ALLOWED), str(DENIED)], 1, id="one-denied-is-1"),
        pytest.param([str(ALLOWED), "missing.yaml"], 2, id="unreadable-input-is-2"),
        pytest.param([], 2, id="no-manifests-is-2"),
        pytest.param(["--namespace-labels", "nolabels", str(ALLOWED)], 2, id="bad-ns-labels-is-2"),
        pytest.param(["--now", "soon", str(ALLOWED)], 2, id="bad-now-is-2"),
        pytest.param(["--namespace", "ml-staging", str(ALLOWED)], 2, id="namespace-mismatch-is-2"),
        pytest.param(
            ["--policies", str(TRICKY / "quotas.yaml"), str(ALLOWED)], 2, id="bad-policies-is-2"
        ),
        pytest.param(
            ["--suite", str(ROOT / "policies/suites/defaults.suite.yaml")],
            0,
            id="suite-passing-is-0",
        ),
        pytest.param(["--suite", "x.yaml", str(ALLOWED)], 2, id="suite-and-manifests-is-2"),
    ],
)
def test_exit_status_says_allowed_denied_or_unusable(
    args: list[str], code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(args, capsys)[0] == code


def test_text_shows_verdict_messages_and_a_diff(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([str(DENIED), str(WARNED)], capsys)
    assert code == 1
    assert "Deployment ml-production/recommendation-model: DENIED" in out
    assert "  deny:  - [model-validation-production/labels.accuracy] deployment" in out
    assert "Pod ml-staging/churn-model: WARNED" in out
    assert "  warn:  [model-validation-elsewhere] pod ml-staging/churn-model has no" in out
    assert "--- Deployment ml-production/recommendation-model (submitted)" in out
    assert "+++ Deployment ml-production/recommendation-model (after mlgate)" in out
    assert "+        - name: MODEL_NAME\n" in out
    assert out.rstrip().endswith("2 objects: 0 allowed, 1 warned, 1 denied")


def test_patch_output_applied_to_the_input_gives_the_yaml_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sources = [str(p) for p in sorted(EXAMPLES.glob("*.yaml"))]
    _, patches, summary = run(["--output", "patch", *sources], capsys)
    assert "denied" in summary
    _, mutated_yaml, _ = run(["--output", "yaml", *sources], capsys)
    chunks = [c for c in patches.split("# ") if c]
    mutated = list(yaml.safe_load_all(mutated_yaml))
    originals = [yaml.safe_load(Path(s).read_text()) for s in sources]
    assert len(chunks) == len(mutated) == len(originals) == 9
    for chunk, original, expected in zip(chunks, originals, mutated, strict=True):
        patch = json.loads(chunk.split("\n", 1)[1])
        assert jsonpatch.apply_patch(original, patch) == expected


def test_yaml_output_is_valid_and_needs_no_second_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, mutated_yaml, _ = run(["--output", "yaml", str(EXAMPLES)], capsys)
    assert "# mlgate policy test: denied: mlgate denied deployment" in mutated_yaml
    for obj in yaml.safe_load_all(mutated_yaml):
        validate_k8s(obj)
    (tmp_path / "mutated.yaml").write_text(mutated_yaml)
    _, report, _ = run(["--output", "json", str(tmp_path / "mutated.yaml")], capsys)
    assert [o["patch"] for o in json.loads(report)["objects"]] == [[]] * 9


def test_json_report_lists_every_object_and_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {}\n")
    code, out, _ = run(["-o", "json", str(DENIED), str(tmp_path / "bad.yaml")], capsys)
    report = json.loads(out)
    assert code == report["exitCode"] == 2
    assert report["summary"] == {"allowed": 0, "warned": 0, "denied": 1, "error": 0, "invalid": 1}
    assert report["errors"] == [
        {
            "source": str(tmp_path / "bad.yaml"),
            "document": 1,
            "item": None,
            "reason": "a Pod without containers: spec.containers is missing or empty",
        }
    ]
    (obj,) = report["objects"]
    assert (obj["kind"], obj["namespace"], obj["name"], obj["verdict"]) == (
        "Deployment",
        "ml-production",
        "recommendation-model",
        "denied",
    )
    assert obj["allowed"] is False
    assert obj["mutatedBy"] == ["model-defaults"]
    failed = {
        (r["policy"], r["rule"], r["action"]) for r in obj["results"] if r["status"] == "fail"
    }
    assert ("model-validation-production", "labels.accuracy", "deny") in failed


@pytest.mark.parametrize(
    ("flags", "verdict", "message"),
    [
        pytest.param([], "allowed", "", id="namespace-selector-unknown-without-labels"),
        pytest.param(
            ["--namespace-labels", "ml-gold=tier=gold,team=ml"],
            "denied",
            "requires images pinned by digest",
            id="namespace-labels-select-the-policy",
        ),
    ],
)
def test_namespace_labels_feed_namespace_selectors(
    flags: list[str], verdict: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = [
        "--policies",
        str(default_policy_dir()),
        "--policies",
        str(TRICKY / "policies/40-gold-tier-digests.yaml"),
    ]
    _, out, _ = run(
        ["-o", "json", *policies, *flags, str(TRICKY / "manifests/workloads.yaml")], capsys
    )
    (obj,) = [o for o in json.loads(out)["objects"] if o["name"] == "pricing-model"]
    assert obj["verdict"] == verdict
    assert message in obj["denial"]


@pytest.mark.parametrize(
    ("flags", "verdict", "rule_status"),
    [
        pytest.param([], "allowed", "skip", id="no-quota-files-not-looked-up"),
        pytest.param(
            ["--resource-quota", str(TRICKY / "quotas.yaml")],
            "denied",
            "fail",
            id="quota-file-with-used",
        ),
        pytest.param(
            ["--namespace-labels", "ml-staging="],
            "allowed",
            "pass",
            id="offline-namespace-without-quota",
        ),
    ],
)
def test_resource_quota_files_feed_the_live_quota_check(
    flags: list[str], verdict: str, rule_status: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(["-o", "json", *flags, str(TRICKY / "manifests/workloads.yaml")], capsys)
    (obj,) = [o for o in json.loads(out)["objects"] if o["name"] == "feature-builder"]
    assert obj["verdict"] == verdict
    statuses = {r["status"] for r in obj["results"] if r["rule"] == "quota.resource-quota"}
    assert statuses == {rule_status}


@pytest.mark.parametrize(
    ("flags", "verdict"),
    [
        pytest.param([], "denied", id="admin"),
        pytest.param(
            ["--user", "oncall", "--group", "mlgate:break-glass"], "allowed", id="break-glass-group"
        ),
    ],
)
def test_user_and_groups_reach_exemptions(
    flags: list[str], verdict: str, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = ["--policies", str(TRICKY / "policies/20-model-validation-production.yaml")]
    manifest = str(TRICKY / "manifests/exemptions.yaml")
    _, out, _ = run(["-o", "json", *policies, *flags, manifest], capsys)
    (obj,) = [o for o in json.loads(out)["objects"] if o["name"] == "churn-scorer"]
    assert obj["verdict"] == verdict


@pytest.mark.parametrize(
    ("flags", "namespace"),
    [
        pytest.param([], "default", id="default-namespace"),
        pytest.param(["--namespace", "ml-sandbox"], "ml-sandbox", id="namespace-flag"),
    ],
)
def test_objects_without_a_namespace_get_the_default_or_given_one(
    tmp_path: Path, flags: list[str], namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pod.yaml").write_text(BARE_POD)
    _, out, _ = run(["-o", "json", *flags, str(tmp_path / "pod.yaml")], capsys)
    (obj,) = json.loads(out)["objects"]
    assert obj["namespace"] == obj["mutated"]["metadata"]["namespace"] == namespace


def test_stdin_to_kubectl_ready_yaml_through_the_real_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "policy", "test", "-o", "yaml", "-"],
        input=BARE_POD,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (pod,) = yaml.safe_load_all(result.stdout)
    validate_k8s(pod)
    assert pod["metadata"]["annotations"]["mlgate.io/mutated-by"] == "model-defaults"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert result.stderr == "1 object: 0 allowed, 1 warned, 0 denied\n"
