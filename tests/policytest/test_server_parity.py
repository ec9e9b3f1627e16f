"""``mlgate policy test`` says what the running server does: the example manifests go through
both, and every answer must be the same, byte for byte once parsed.

The server is the real ``mlgate serve`` (gunicorn over TLS, ``--no-cluster``, the shipped default
policies), called the way the API server calls it; ``policy test`` runs offline with no cluster
either. For each object the AdmissionReview that ``policy test`` built for ``/mutate`` is sent to
the server, the server's patch is applied to the object, and that mutated object must be the one
``policy test`` sent to ``/validate``, whose answer must match the server's too.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import urllib3

from policies.loader import default_policy_dir, load_policy_dir
from tests.harness import ROOT, RunningServer, TlsFiles, run_server
from webhook.policytest.manifests import read_manifests
from webhook.policytest.runner import ObjectReport, run_manifests

EXAMPLES = ROOT / "policies" / "examples"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, */*",
    "User-Agent": "kube-apiserver-admission",
}


@pytest.fixture(scope="module")
def server(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with run_server(tls=tls_files, workdir=tmp_path_factory.mktemp("parity"), workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def pool(server: RunningServer) -> urllib3.HTTPSConnectionPool:
    return urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED", maxsize=1
    )


def example_reports() -> list[ObjectReport]:
    found = read_manifests([EXAMPLES])
    assert not found.errors, found.errors
    reports, errors = run_manifests(
        found.manifests, policy_set=load_policy_dir(default_policy_dir())
    )
    assert not errors
    return reports


REPORTS = example_reports()


def post(pool: urllib3.HTTPSConnectionPool, webhook: str, body: bytes) -> dict[str, Any]:
    response = pool.request("POST", f"/{webhook}?timeout=5s", body=body, headers=HEADERS)
    assert response.status == 200, response.data
    answer: dict[str, Any] = json.loads(response.data)
    return answer


@pytest.mark.parametrize("report", REPORTS, ids=[f"{r.kind}-{r.name}" for r in REPORTS])
def test_policy_test_answers_as_the_running_server_does(
    pool: urllib3.HTTPSConnectionPool, report: ObjectReport
) -> None:
    mutate, validate = report.exchanges
    assert (mutate.webhook, validate.webhook) == ("mutate", "validate")

    served_mutation = post(pool, "mutate", mutate.body)
    assert served_mutation == json.loads(json.dumps(mutate.review))
    response = served_mutation["response"]
    patch = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    mutated_by_server = jsonpatch.apply_patch(json.loads(mutate.body)["request"]["object"], patch)
    assert json.loads(validate.body)["request"]["object"] == mutated_by_server == report.mutated

    served_validation = post(pool, "validate", validate.body)
    assert served_validation == json.loads(json.dumps(validate.review))
    allowed = served_validation["response"]["allowed"]
    assert allowed == (report.verdict in ("allowed", "warned"))
    warned = bool(response.get("warnings") or served_validation["response"].get("warnings"))
    assert warned == bool(report.warnings)


def test_the_examples_cover_every_verdict_and_mutation() -> None:
    assert {r.verdict for r in REPORTS} == {"allowed", "warned", "denied"}
    assert any(not r.patch for r in REPORTS)
    assert sum(1 for r in REPORTS if r.patch) >= 7
