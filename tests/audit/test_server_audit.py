"""The audit trail and metrics through the real server: gunicorn, several workers, TLS.

Many clients send a known number of denied requests at once; after SIGTERM the store holds
exactly one record per request (none lost, none duplicated), ``mlgate audit report`` shows them,
each was logged as one JSON line, and ``/metrics`` summed every worker's counts.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, RunningServer, TlsFiles, client_context, load_review, run_server
from webhook.audit.database import AuditQuery, open_audit_database

NAMESPACE = "locked-down"
POLICY = f"""\
apiVersion: mlgate.io/v1alpha1
kind: Policy
metadata:
  name: locked-down
spec:
  match:
    namespaces:
      include: [{NAMESPACE}]
  validate:
    labels:
      action: deny
      required:
        - name: mlgate.io/never-present
      minAccuracy: null
      maxBiasScore: null
      requireValidated: false
"""
CLIENTS = 12
REQUESTS = 240
BASE_REVIEW = load_review("002-validate-create-deployment-recommendation-model")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policies")
    (folder / "locked-down.yaml").write_text(POLICY)
    return folder


def make_review(uid: str) -> bytes:
    review = copy.deepcopy(BASE_REVIEW)
    request = review["request"]
    request["uid"] = uid
    request["namespace"] = NAMESPACE
    request["object"]["metadata"]["namespace"] = NAMESPACE
    return json.dumps(review).encode()


class Client:
    """One kept-alive TLS connection per thread, as the API server keeps its own."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.local = threading.local()

    def post(self, body: bytes) -> dict[str, Any]:
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.server.port, context=client_context(self.server.ca), timeout=30
            )
            self.local.connection = connection
        connection.request(
            "POST", "/validate?timeout=10s", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = response.read()
        assert response.status == 200, data
        result: dict[str, Any] = json.loads(data)
        return result


def send_denied(servers: list[RunningServer], count: int) -> list[str]:
    """Send ``count`` distinct denied reviews at once, spread over the servers; their uids."""
    uids = [str(uuid.uuid4()) for _ in range(count)]
    clients = [Client(server) for server in servers]

    def send(index: int) -> None:
        review = clients[index % len(clients)].post(make_review(uids[index]))
        response = review["response"]
        assert response["uid"] == uids[index]
        assert response["allowed"] is False

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, range(count)))
    return uids


def scrape_metrics(server: RunningServer) -> str:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=client_context(server.ca), timeout=10
    )
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    assert response.status == 200
    text = response.read().decode()
    connection.close()
    return text


def scrape_settled_metrics(server: RunningServer, *, expected_denials: int) -> str:
    """``/metrics`` once every worker has added its counts (within metrics.FLUSH_INTERVAL)."""
    deadline = time.monotonic() + 5
    while True:
        text = scrape_metrics(server)
        denials = read_sample(
            text, "mlgate_admission_requests_total", webhook="validate", decision="deny"
        )
        if denials >= expected_denials or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


def read_sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[3])
    return total


def run_report(target: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook.cli",
            "audit",
            "report",
            "--audit-db",
            target,
            "--since",
            "1h",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def read_audit_lines(server: RunningServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith('{"logger":"mlgate.audit"'):
            lines.append(json.loads(line))
    return lines


def assert_exactly_once(target: str, uids: list[str]) -> None:
    database = open_audit_database(target, create=False)
    records = database.query(AuditQuery())
    database.close()
    assert len(records) == len(uids)
    assert sorted(r.uid for r in records) == sorted(uids)
    assert {(r.namespace, r.policy, r.action) for r in records} == {
        (NAMESPACE, "locked-down", "deny")
    }
    report = run_report(target)
    assert report["total"] == len(uids)
    assert sorted(r["uid"] for r in report["records"]) == sorted(uids)


def test_every_denial_under_load_is_stored_exactly_once_with_sqlite(
    tls_files: TlsFiles, policy_dir: Path, tmp_path: Path
) -> None:
    target = str(tmp_path / "audit.db")
    with run_server(
        tls=tls_files,
        workdir=tmp_path,
        policies=policy_dir,
        workers=3,
        extra_args=("--audit-db", target),
    ) as server:
        uids = send_denied([server], REQUESTS)
        metrics_text = scrape_settled_metrics(server, expected_denials=REQUESTS)
        # The report works on the live database while the server writes to it.
        assert run_report(target)["total"] <= REQUESTS
        assert server.stop() == 0
    assert_exactly_once(target, uids)
    assert sorted(line["uid"] for line in read_audit_lines(server)) == sorted(uids)
    assert (
        read_sample(
            metrics_text, "mlgate_admission_requests_total", webhook="validate", decision="deny"
        )
        == REQUESTS
    )
    assert (
        read_sample(
            metrics_text, "mlgate_policy_results_total", policy="locked-down", result="fail"
        )
        == REQUESTS
    )
    assert (
        read_sample(metrics_text, "mlgate_admission_duration_seconds_count", webhook="validate")
        == REQUESTS
    )
    assert "mlgate_audit_dropped_total 0.0" in metrics_text
    assert read_sample(metrics_text, "mlgate_cert_expiry_timestamp_seconds") > 0


def test_two_servers_sharing_postgresql_store_every_denial_exactly_once(
    tls_files: TlsFiles, policy_dir: Path, tmp_path: Path, postgres_url: str
) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    with (
        run_server(
            tls=tls_files,
            workdir=first_dir,
            policies=policy_dir,
            workers=2,
            extra_args=("--audit-db", postgres_url),
        ) as first,
        run_server(
            tls=tls_files,
            workdir=second_dir,
            policies=policy_dir,
            workers=2,
            extra_args=("--audit-db", postgres_url),
        ) as second,
    ):
        uids = send_denied([first, second], REQUESTS)
        assert first.stop() == 0
        assert second.stop() == 0
    assert_exactly_once(postgres_url, uids)
    logged = read_audit_lines(first) + read_audit_lines(second)
    assert sorted(line["uid"] for line in logged) == sorted(uids)


def child_pids(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_workers_replaced_on_reload_keep_the_metrics_and_the_one_audit_writer(
    tls_files: TlsFiles, policy_dir: Path, tmp_path: Path
) -> None:
    """SIGHUP makes gunicorn start new workers and stop the old ones gracefully: the old ones
    must not take the master's metrics folder or its audit writer with them."""
    target = str(tmp_path / "audit.db")
    with run_server(
        tls=tls_files, workdir=tmp_path, policies=policy_dir, extra_args=("--audit-db", target)
    ) as server:
        first = send_denied([server], 40)
        before = child_pids(server.process.pid)
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while len(child_pids(server.process.pid) - before) < 2:  # two new workers
            assert time.monotonic() < deadline, "no new workers after SIGHUP"
            time.sleep(0.1)
        while len(before & child_pids(server.process.pid)) > 1:  # old workers gone
            assert time.monotonic() < deadline, "old workers did not stop"
            time.sleep(0.1)
        second = send_denied([server], 40)
        metrics_text = scrape_settled_metrics(server, expected_denials=80)
        assert server.stop() == 0
    assert_exactly_once(target, first + second)
    assert (
        read_sample(
            metrics_text, "mlgate_admission_requests_total", webhook="validate", decision="deny"
        )
        == 80
    )
    assert server.log().count("audit writer started") == 1


def wait_until_stored(target: str, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        database = open_audit_database(target, create=False)
        try:
            if database.count(AuditQuery()) >= count:
                return
        finally:
            database.close()
        assert time.monotonic() < deadline, "the records were not stored in time"
        time.sleep(0.1)


def audit_writer_pid(server: RunningServer) -> int:
    for pid in child_pids(server.process.pid):
        if b"webhook.audit.writer" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("no audit writer process")


def test_an_audit_writer_killed_under_load_is_restarted_and_nothing_is_lost(
    tls_files: TlsFiles, policy_dir: Path, tmp_path: Path
) -> None:
    """gunicorn's master reaps every child it sees exit, the writer included: the server must
    still notice, start another, and store what was sent meanwhile."""
    target = str(tmp_path / "audit.db")
    with run_server(
        tls=tls_files, workdir=tmp_path, policies=policy_dir, extra_args=("--audit-db", target)
    ) as server:
        first = send_denied([server], 40)
        # Killed once it has stored them: what a writer had read and not yet stored when it
        # died is lost (the socket keeps only what nobody has read).
        wait_until_stored(target, 40)
        os.kill(audit_writer_pid(server), signal.SIGKILL)
        second = send_denied([server], 40)  # while no writer runs, or the new one starts
        deadline = time.monotonic() + 20
        while server.log().count("audit writer started") < 2:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        third = send_denied([server], 40)
        assert server.stop() == 0
    assert_exactly_once(target, first + second + third)
    assert "restarting it in 1 s" in server.log()
