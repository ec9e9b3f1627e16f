"""The load generators send what the API server sends: a uid of its own on every request, the
``timeout`` query parameter and kube-apiserver's headers, over TLS.

A small TLS server records what reaches it; both clients (``wrk`` when installed, and the Python
one) are checked against it.
"""

from __future__ import annotations

import shutil
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.bodies import load_bodies
from bench.load import Client, run_load
from tests.harness import write_tls_files


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[tuple[str, dict[str, str], str]] = []  # path, headers, request uid
        self.lock = threading.Lock()


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        uid = orjson.loads(body)["request"]["uid"]
        with self.server.lock:
            self.server.seen.append((self.path, dict(self.headers), uid))
        answer = orjson.dumps({"response": {"uid": uid, "allowed": True}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if self.headers.get("Connection") == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Recorder]:
    tls = write_tls_files(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert, tls.key)
    server = Recorder(("127.0.0.1", 0), RecordingHandler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CLIENTS: list[Any] = [
    pytest.param(
        "wrk", marks=pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed")
    ),
    "python",
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("new_connection", [False, True], ids=["keep-alive", "new-connection"])
def test_every_request_has_a_uid_of_its_own_and_the_api_servers_headers(
    recorder: Recorder, tmp_path: Path, client: Client, new_connection: bool
) -> None:
    bodies = load_bodies("validate")
    port = recorder.server_address[1]
    result = run_load(
        client,
        url=f"https://127.0.0.1:{port}",
        path="/validate",
        bodies=bodies,
        connections=2,
        new_connection=new_connection,
        seconds=1,
        workdir=tmp_path,
    )

    assert result.errors == 0
    assert result.requests >= len(bodies)
    uids = [uid for _, _, uid in recorder.seen]
    assert len(uids) >= result.requests
    assert len(set(uids)) == len(uids), "a uid was sent twice"
    captured = {body.uid[:-12] for body in bodies}
    assert {uid[:-12] for uid in uids} == captured  # only the counter digits differ
    for path, headers, _ in recorder.seen:
        assert path == "/validate?timeout=5s"
        assert headers["User-Agent"] == "kube-apiserver-admission"
        assert headers["Content-Type"] == "application/json"
        assert headers["Accept"] == "application/json, */*"


def test_stamp_changes_only_the_request_uid() -> None:
    body = load_bodies("validate")[0]
    stamped = orjson.loads(body.stamp(0x2A))
    original = orjson.loads(body.data)

    assert stamped["request"]["uid"] == body.uid[:-12] + "00000000002a"
    stamped["request"]["uid"] = original["request"]["uid"]
    assert stamped == original
