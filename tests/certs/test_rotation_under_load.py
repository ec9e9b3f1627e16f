"""Certificate rotation under load: zero failed requests while the files are swapped.

A real ``mlgate serve`` (gunicorn, 2 workers, TLS) reads its certificate from a folder laid out
as a mounted Secret (``tls.crt -> ..data/tls.crt``). Clients keep posting AdmissionReviews, some
over kept-alive connections and some with a new connection (a new handshake) per request, while
the folder is switched four times with one ``..data`` symlink swap each, the last two to a leaf
of a new CA (the clients trust both, as the caBundle does during a CA rotation).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs.authority import KeyPair, build_ca, build_serving_cert
from certs.files import CertificateFiles, publish_certificate_files
from tests.harness import REVIEWS, TlsFiles, run_server

LOAD_SECONDS_AFTER_LAST_SWAP = 1.5
SWAP_EVERY_SECONDS = 0.75
REVIEW = (REVIEWS / "002-validate-create-deployment-recommendation-model.json").read_bytes()


@dataclass
class Tally:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    # Fingerprints of the leaf each new connection saw, in order.
    seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def post_review(conn: http.client.HTTPSConnection) -> None:
    conn.request("POST", "/validate?timeout=5s", body=REVIEW,
                 headers={"Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise AssertionError(f"HTTP {response.status}: {body[:200]!r}")
    uid = json.loads(body)["response"]["uid"]
    if uid != json.loads(REVIEW)["request"]["uid"]:
        raise AssertionError(f"wrong uid {uid}")


def keep_alive_client(
    port: int, context: ssl.SSLContext, stop: threading.Event, tally: Tally
) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    while not stop.is_set():
        try:
            post_review(conn)
            with tally.lock:
                tally.ok += 1
        except Exception as error:
            with tally.lock:
                tally.failures.append(f"kept-alive: {error!r}")
            conn.close()
    conn.close()


def new_connection_client(
    port: int, context: ssl.SSLContext, stop: threading.Event, tally: Tally
) -> None:
    while not stop.is_set():
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        try:
            post_review(conn)
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            assert der is not None
            with tally.lock:
                tally.ok += 1
                tally.seen.append(fingerprint(der))
        except Exception as error:
            with tally.lock:
                tally.failures.append(f"new connection: {error!r}")
        finally:
            conn.close()


def leaf_of(ca: KeyPair) -> KeyPair:
    return build_serving_cert(ca=ca, dns_names=["localhost"], ip_addresses=["127.0.0.1"])


@pytest.mark.timeout(120)
def test_rotation_under_load_fails_no_request(tmp_path: Path) -> None:
    old_ca, new_ca = build_ca(common_name="old CA"), build_ca(common_name="new CA")
    bundle = old_ca.cert_pem + new_ca.cert_pem
    leaves = [leaf_of(old_ca), leaf_of(old_ca), leaf_of(new_ca), leaf_of(new_ca), leaf_of(new_ca)]
    certs_dir = tmp_path / "certs"

    def publish(leaf: KeyPair) -> None:
        publish_certificate_files(
            certs_dir, files=CertificateFiles(ca_bundle_pem=bundle, serving=leaf)
        )

    publish(leaves[0])
    tls = TlsFiles(ca=certs_dir / "ca.crt", cert=certs_dir / "tls.crt", key=certs_dir / "tls.key")
    context = ssl.create_default_context(cadata=bundle.decode())
    tally, stop = Tally(), threading.Event()
    with run_server(tls=tls, workdir=tmp_path, workers=2) as server:
        clients = [
            threading.Thread(target=target, args=(server.port, context, stop, tally))
            for target in (keep_alive_client, keep_alive_client, new_connection_client,
                           new_connection_client)
        ]  # fmt: skip
        for client in clients:
            client.start()
        for leaf in leaves[1:]:
            time.sleep(SWAP_EVERY_SECONDS)
            publish(leaf)
        time.sleep(LOAD_SECONDS_AFTER_LAST_SWAP)
        stop.set()
        for client in clients:
            client.join(timeout=15)
        log = server.log()

    print(f"{tally.ok} requests, leaves seen in turn: {len(set(tally.seen))}")
    assert tally.failures == [], log[-3000:]
    assert tally.ok > 100
    wanted = [fingerprint(leaf.certificate.public_bytes(Encoding.DER)) for leaf in leaves]
    # Every leaf was served in turn, and the last connections got the last one.
    assert set(tally.seen) <= set(wanted)
    assert tally.seen[-1] == wanted[-1]
    assert len(set(tally.seen)) >= 3
