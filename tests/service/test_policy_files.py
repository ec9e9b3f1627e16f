"""Policy files: loading, errors that name file, line and field, the published schema, lint."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from policies.loader import (
    SETTINGS_FIELDS,
    PolicyLoadError,
    default_policy_dir,
    load_policy_dir,
    load_policy_texts,
    policy_schema,
)
from webhook.cli import main

HEADER = "apiVersion: mlgate.io/v1alpha1\nkind: Policy\nmetadata:\n  name: p\n"


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy_texts([("policy.yaml", text)])
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            HEADER + "spec:\n  match:\n    kinds: [Deployment, Service]\n",
            "policy.yaml:7: spec.match.kinds[1]: expected one of: Pod, Deployment",
            id="unknown-kind",
        ),
        pytest.param(
            HEADER + "spec:\n  mutate:\n    gpuSchedling: {}\n",
            "policy.yaml:7: spec.mutate.gpuSchedling: unknown field; expected one of: "
            "gpuScheduling",
            id="misspelt-mutator",
        ),
        pytest.param(
            HEADER
            + "spec:\n  mutate:\n    resourceDefaults:\n      requests:\n        cpu: lots\n",
            "policy.yaml:9: spec.mutate.resourceDefaults.requests.cpu: expected a Kubernetes "
            'quantity such as 500m, 2 or 1Gi; got "lots"',
            id="bad-quantity",
        ),
        pytest.param(
            HEADER + "spec:\n  validate:\n    images:\n      action: block\n",
            "policy.yaml:8: spec.validate.images.action: "
            'expected one of: deny, warn, audit; got "block"',
            id="bad-action",
        ),
        pytest.param(
            HEADER + "spec:\n  validate:\n    labels:\n      minAccuracy: high\n",
            "policy.yaml:8: spec.validate.labels.minAccuracy: "
            'expected a number or null, got "high"',
            id="accuracy-not-number",
        ),
        pytest.param(
            HEADER + "spec:\n  exemptions:\n    - expires: 2026-13-45\n",
            "policy.yaml:7: spec.exemptions[0].expires: not a date or RFC 3339 time",
            id="impossible-date",
        ),
        pytest.param(
            HEADER + "spec:\n  validate:\n    labels:\n      required:\n        - name: app\n"
            '          pattern: "[unclosed"\n',
            "policy.yaml:10: spec.validate.labels.required[0].pattern: not a valid regular "
            "expression",
            id="bad-regex",
        ),
        pytest.param(
            HEADER + "spec:\n  match:\n    selector:\n      matchExpressions:\n"
            "        - {key: tier, operator: In}\n",
            "policy.yaml:9: spec.match.selector.matchExpressions[0].values: In needs values",
            id="in-without-values",
        ),
        pytest.param(
            "kind: Policy\nmetadata: {name: x}\nspec: {}\n",
            "policy.yaml:1: missing required field 'apiVersion'",
            id="no-api-version",
        ),
        pytest.param(
            HEADER.replace("v1alpha1", "v2") + "spec: {}\n",
            'policy.yaml:1: apiVersion: expected one of: mlgate.io/v1alpha1; got "mlgate.io/v2"',
            id="wrong-api-version",
        ),
        pytest.param("a: [1, 2\n", "policy.yaml:2: not valid YAML", id="not-yaml"),
        pytest.param(
            HEADER + "spec:\n  match: {}\n  match: {}\n",
            "policy.yaml:7: spec.match: is given twice",
            id="duplicate-key",
        ),
        pytest.param(
            HEADER + "spec: {}\n---\n" + HEADER + "spec: {}\n",
            "policy.yaml:7: metadata.name: policy 'p' is already defined at policy.yaml:1",
            id="duplicate-policy",
        ),
    ],
)
def test_error_names_file_line_and_field(text: str, expected: str) -> None:
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_of_a_file_is_reported() -> None:
    text = HEADER + "spec:\n  validate:\n    images:\n      action: block\n      nope: 1\n"
    assert len(errors_of(text)) == 2


def test_defaults_load() -> None:
    policy_set = load_policy_dir(default_policy_dir())
    names = [p.name for p in policy_set.policies]
    assert names == [
        "model-defaults",
        "image-policy",
        "model-validation-production",
        "model-validation-elsewhere",
        "resource-budgets",
    ]
    defaults = policy_set.policies[0]
    assert defaults.mutate.resource_defaults is not None
    assert dict(defaults.mutate.resource_defaults.requests) == {"cpu": "500m", "memory": "1Gi"}


def test_many_policies_per_file_and_per_folder(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        HEADER + "spec: {}\n---\n" + HEADER.replace("p\n", "q\n") + "spec: {}\n"
    )
    (tmp_path / "b.yml").write_text(HEADER.replace("p\n", "r\n") + "spec: {}\n")
    (tmp_path / "notes.txt").write_text("not a policy")
    (tmp_path / ".hidden.yaml").write_text("broken: [")
    assert [p.name for p in load_policy_dir(tmp_path).policies] == ["p", "q", "r"]


def test_every_schema_setting_is_read_by_the_loader() -> None:
    """A field the schema allows but the loader ignores would silently do nothing."""
    spec = policy_schema()["properties"]["spec"]["properties"]
    for key, fields in SETTINGS_FIELDS.items():
        section, name = key.split(".")
        properties = spec[section]["properties"][name]["properties"]
        assert set(properties) == set(fields), key


def test_published_schema_accepts_the_defaults() -> None:
    validator = jsonschema.Draft202012Validator(policy_schema())
    for path in sorted(default_policy_dir().glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            validator.validate(json.loads(json.dumps(document, default=str)))


def test_lint_passes_on_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "lint", str(default_policy_dir())]) == 0
    assert "5 policies OK" in capsys.readouterr().out


def test_lint_prints_file_line_field_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.yaml").write_text(
        HEADER + "spec:\n  validate:\n    images:\n      action: block\n"
    )
    assert main(["policy", "lint", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'bad.yaml'}:8: spec.validate.images.action: expected one of" in out


def test_schema_command_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "mlgate Policy"


def test_readme_policy_example_loads() -> None:
    """The policy shown in the README is a working policy, not a sketch."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: mlgate.io/v1alpha1\nkind: Policy\n")
    block = readme[start + len("```yaml\n") : readme.index("```", start + 8)]
    names = [p.name for p in load_policy_texts([("README.md", block)]).policies]
    assert names == ["model-validation-production"]
