"""Reading manifests as ``kubectl apply -f`` does, and saying exactly what is wrong with a bad one
(file, document, reason) while the other objects are still read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from webhook.policytest.manifests import ManifestError, read_manifests

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: ml-staging}
spec:
  containers: [{name: app, image: "registry.example.com/app:1.0"}]
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: %s}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: app, image: "registry.example.com/app:1.0"}]
"""


def names(folder: Path, *sources: str) -> list[str]:
    found = read_manifests([folder / s for s in sources])
    assert not found.errors, found.errors
    return [f"{m.kind.kind}/{m.name}" for m in found.manifests]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"a.yaml": POD % "one" + "---\n" + DEPLOYMENT % "two"},
            ["Pod/one", "Deployment/two"],
            id="multi-document-yaml",
        ),
        pytest.param(
            {"a.yaml": "---\n" + POD % "one" + "---\n---\n# only a comment\n"},
            ["Pod/one"],
            id="leading-separator-and-empty-documents",
        ),
        pytest.param(
            {
                "list.yaml": "apiVersion: v1\nkind: List\nitems:\n"
                + "".join(
                    "- " + (POD % n).replace("\n", "\n  ").rstrip() + "\n" for n in ("a", "b")
                )
            },
            ["Pod/a", "Pod/b"],
            id="kind-list",
        ),
        pytest.param(
            {
                "pod.json": json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": "from-json"},
                        "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                    },
                    indent="\t",  # tabs: not YAML, still JSON
                )
            },
            ["Pod/from-json"],
            id="json-with-tabs",
        ),
        pytest.param(
            {"b/z.yml": POD % "deep", "a.yaml": POD % "top", "b/.hidden/x.yaml": POD % "no"},
            ["Pod/top", "Pod/deep"],
            id="folder-recursive-sorted-hidden-skipped",
        ),
    ],
)
def test_manifests_are_read_like_kubectl_apply(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert names(tmp_path, ".") == expected


def test_stdin_is_read_for_a_dash() -> None:
    found = read_manifests(["-"], stdin=io.StringIO(POD % "piped"))
    assert [m.name for m in found.manifests] == ["piped"]
    assert str(found.manifests[0].location) == "-, document 1"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(
            "kind: Pod\nmetadata: {name: [unclosed\n", "not valid YAML: line 8", id="not-yaml"
        ),
        pytest.param("- just\n- a list\n", "not a Kubernetes object", id="not-a-mapping"),
        pytest.param("apiVersion: v1\nmetadata: {name: x}\n", "has no kind", id="no-kind"),
        pytest.param(
            "kind: Pod\nmetadata: {name: x}\n", "Pod has no apiVersion", id="no-api-version"
        ),
        pytest.param(
            (DEPLOYMENT % "x").replace("kind: Deployment", "kind: Deploymnet"),
            "unknown kind 'Deploymnet' in apps/v1",
            id="unknown-kind",
        ),
        pytest.param(
            (DEPLOYMENT % "x").replace("apps/v1", "extensions/v1beta1"),
            "Deployment is served as apps/v1, not extensions/v1beta1",
            id="wrong-api-version",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
            "a Pod without containers: spec.containers is missing or empty",
            id="pod-without-containers",
        ),
        pytest.param(
            (DEPLOYMENT % "x").split("  template:")[0],
            "a Deployment without containers: spec.template.spec is missing",
            id="deployment-without-template",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: a}]}\n",
            "Pod has no metadata.name",
            id="no-name",
        ),
        pytest.param("apiVersion: v1\nkind: List\n", "", id="empty-list-is-nothing"),
    ],
)
def test_a_bad_document_is_reported_and_the_others_still_read(
    tmp_path: Path, bad: str, reason: str
) -> None:
    (tmp_path / "mixed.yaml").write_text(POD % "before" + "---\n" + bad + "---\n" + POD % "after")
    found = read_manifests([tmp_path / "mixed.yaml"])
    assert [m.name for m in found.manifests] == ["before", "after"]
    if not reason:
        assert not found.errors
        return
    assert len(found.errors) == 1, found.errors
    error = found.errors[0]
    assert isinstance(error, ManifestError)
    assert error.location.source == str(tmp_path / "mixed.yaml")
    assert error.location.document == 2
    assert reason in error.reason
    assert str(error).startswith(f"{tmp_path / 'mixed.yaml'}, document 2: ")


def test_a_bad_item_of_a_list_names_its_index(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a},"
        " spec: {containers: [{name: c}]}}\n- {apiVersion: v1, metadata: {name: b}}\n"
    )
    found = read_manifests([tmp_path / "list.yaml"])
    assert [m.name for m in found.manifests] == ["a"]
    assert [str(e) for e in found.errors] == [
        f"{tmp_path / 'list.yaml'}, document 1, items[1]: has no kind"
    ]


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        pytest.param("missing.yaml", "no such file or folder", id="missing-file"),
        pytest.param("empty-folder", "folder holds no manifest files", id="empty-folder"),
    ],
)
def test_unreadable_sources_are_errors(tmp_path: Path, source: str, reason: str) -> None:
    (tmp_path / "empty-folder").mkdir()
    found = read_manifests([tmp_path / source])
    assert [e.reason for e in found.errors] == [reason]


def test_custom_resources_of_other_groups_are_read_not_rejected(tmp_path: Path) -> None:
    (tmp_path / "cr.yaml").write_text(
        "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: c}\nspec: {}\n"
    )
    found = read_manifests([tmp_path / "cr.yaml"])
    assert not found.errors
    assert found.manifests[0].kind.resource == "certificates"
    assert not found.manifests[0].kind.pod_bearing
