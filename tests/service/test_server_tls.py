"""The real server: ``mlgate serve`` (gunicorn, gthread, TLS) called by real HTTPS clients that
verify our CA, the way the API server calls it."""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import urllib3

from tests.harness import (
    RunningServer,
    TlsFiles,
    client_context,
    load_review,
    review_files,
    run_server,
    webhook_of,
)
from tests.k8s_schema import validate_k8s
from webhook import metrics

HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, */*",
    "User-Agent": "kube-apiserver-admission",
}


@pytest.fixture(scope="module")
def server(
    tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    with run_server(tls=tls_files, workdir=tmp_path_factory.mktemp("server")) as running:
        yield running


def test_every_captured_review_is_answered_over_tls(server: RunningServer) -> None:
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED", maxsize=1
    )
    for path in review_files():
        review = json.loads(path.read_text())
        webhook = webhook_of(path)
        response = pool.request(
            "POST", f"/{webhook}?timeout=5s", body=path.read_bytes(), headers=HEADERS
        )
        assert response.status == 200, (path.name, response.data)
        answer = json.loads(response.data)["response"]
        assert answer["uid"] == review["request"]["uid"]
        if "patch" in answer:
            patch = json.loads(base64.b64decode(answer["patch"]))
            validate_k8s(jsonpatch.apply_patch(review["request"]["object"], patch))
    pool.close()


def test_many_requests_share_one_kept_alive_connection(server: RunningServer) -> None:
    body = (Path(review_files()[0])).read_bytes()
    conn = http.client.HTTPSConnection(
        "localhost", server.port, context=client_context(server.ca), timeout=10
    )
    conn.connect()
    sock = conn.sock
    assert isinstance(sock, ssl.SSLSocket)
    peer = sock.getpeercert()
    assert ("DNS", "localhost") in peer["subjectAltName"]
    for _ in range(25):
        conn.request("POST", "/mutate", body=body, headers=HEADERS)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Connection", "").lower() != "close"
        json.loads(response.read())
        assert conn.sock is sock, "the server closed the kept-alive connection"
    conn.close()


def test_connection_stays_open_between_bursts(server: RunningServer) -> None:
    body = review_files()[1].read_bytes()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_context(server.ca), timeout=10
    )
    conn.request("POST", "/validate", body=body, headers=HEADERS)
    conn.getresponse().read()
    sock = conn.sock
    time.sleep(3)  # longer than gunicorn's 2 s default keep-alive
    conn.request("POST", "/validate", body=body, headers=HEADERS)
    assert conn.getresponse().status == 200
    assert conn.sock is sock
    conn.close()


def test_client_that_does_not_trust_the_ca_is_refused(server: RunningServer) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(), timeout=5
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/healthz")
    conn.close()


def test_plain_http_gets_no_admission_answer(server: RunningServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/validate", body=b"{}", headers=HEADERS)
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return  # TLS only: the handshake fails and the connection is dropped
    finally:
        conn.close()
    pytest.fail(f"plain HTTP got an HTTP {status} answer")


def test_bad_input_over_tls_keeps_the_worker_serving(server: RunningServer) -> None:
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED", maxsize=1
    )
    bad = [b"{oops", b"[]", json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode()]
    for body in bad:
        response = pool.request("POST", "/validate", body=body, headers=HEADERS)
        assert 400 <= response.status < 500
        assert json.loads(response.data)["reason"]
    oversized = b'{"pad": "' + b"x" * (3 * 2**20 + 10) + b'"}'
    response = pool.request("POST", "/validate", body=oversized, headers=HEADERS, retries=False)
    assert response.status == 413
    assert "over the limit" in json.loads(response.data)["reason"]
    # The over-limit body was read and dropped, so the same connection serves the next request.
    good = review_files()[1].read_bytes()
    assert pool.request("POST", "/validate", body=good, headers=HEADERS).status == 200
    pool.close()


def test_metrics_sum_every_worker(server: RunningServer) -> None:
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED", maxsize=8
    )
    body = review_files()[1].read_bytes()
    before = _settled_validate_count(pool)
    # New connections spread over both workers (reuse_port).
    for _ in range(20):
        pool.request("POST", "/validate", body=body, headers={**HEADERS, "Connection": "close"})
    assert _settled_validate_count(pool) - before == 20
    pool.close()


def _settled_validate_count(pool: urllib3.HTTPSConnectionPool) -> float:
    """The count once every worker has added its own (each does within FLUSH_INTERVAL)."""
    count = _validate_count(pool)
    for _ in range(10):
        time.sleep(metrics.FLUSH_INTERVAL + 0.2)
        count, previous = _validate_count(pool), count
        if count == previous:
            break
    return count


def _validate_count(pool: urllib3.HTTPSConnectionPool) -> float:
    text = pool.request("GET", "/metrics").data.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("mlgate_admission_requests_total{") and 'webhook="validate"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_decision_log_is_one_json_line_per_admission(server: RunningServer) -> None:
    review = load_review("004-validate-create-deployment-image-analysis-model")
    pool = urllib3.HTTPSConnectionPool(
        "127.0.0.1", server.port, ca_certs=str(server.ca), cert_reqs="CERT_REQUIRED"
    )
    pool.request("POST", "/validate", body=json.dumps(review).encode(), headers=HEADERS)
    pool.close()
    uid = review["request"]["uid"]
    deadline = time.monotonic() + 5
    line: dict[str, Any] | None = None
    audit_lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline and (line is None or not audit_lines):
        time.sleep(0.1)
        logged = [json.loads(text) for text in server.log().splitlines() if uid in text]
        line = next((x for x in logged if x.get("msg") == "admission"), None)
        audit_lines = [x for x in logged if x.get("logger") == "mlgate.audit"]
    assert line is not None, server.log()[-3000:]
    assert line["decision"] == "deny"
    assert line["kind"] == "Deployment"
    assert line["namespace"] == "ml-production"
    assert line["user"] == "admin"
    assert "image-policy" in line["policies"]
    assert line["latency_ms"] > 0
    assert {"policy": "image-policy", "rule": "images.no-latest", "action": "deny"}.items() <= next(
        r for r in line["results"] if r["rule"] == "images.no-latest"
    ).items()
    # The messages are in the request's audit lines, not repeated in its decision line.
    assert all("message" not in r for r in line["results"])
    assert {(a["rule"], a["action"]) for a in audit_lines} >= {("images.no-latest", "deny")}
    assert all(a["message"] for a in audit_lines)


def test_the_server_runs_one_audit_writer_and_no_gunicorn_control_socket(
    server: RunningServer,
) -> None:
    log = server.log()
    assert log.count("audit writer started") == 1
    assert "Control socket listening" not in log


def test_default_serve_makes_and_reuses_a_local_ca(tmp_path: Path, tls_files: TlsFiles) -> None:
    """No --cert: the state folder gets ca.crt, tls.crt and tls.key, reused next start."""
    from webhook.cli import ensure_dev_certificate

    ca, cert, key = ensure_dev_certificate(tmp_path / ".mlgate")
    assert {p.name for p in (ca, cert, key)} == {"ca.crt", "tls.crt", "tls.key"}
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    first = cert.read_bytes()
    ensure_dev_certificate(tmp_path / ".mlgate")
    assert cert.read_bytes() == first
    context = ssl.create_default_context(cafile=str(ca))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(cert), str(key))
    assert context.verify_mode == ssl.CERT_REQUIRED
    shutil.rmtree(tmp_path / ".mlgate")


def test_client_config_names_both_urls_and_the_whole_ca_bundle(tls_files: TlsFiles) -> None:
    from webhook.cli import client_config_text

    text = client_config_text("127.0.0.1:9443", tls_files.ca)
    bundle = base64.b64encode(tls_files.ca.read_bytes()).decode()
    assert "url: https://127.0.0.1:9443/mutate" in text
    assert "url: https://127.0.0.1:9443/validate" in text
    assert text.count(f"caBundle: {bundle}\n") == 2
    assert str(tls_files.ca.resolve()) in text
