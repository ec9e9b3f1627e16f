"""Load generators: ``wrk`` when installed, else a Python client (threads + http.client).

Both send the given bodies in turn as ``POST`` requests over TLS, either over ``connections``
kept-alive connections or with a new connection (and TLS handshake) for every request, and
report requests per second and latency percentiles.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.bodies import Body
from bench.servers import insecure_client_context

Client = Literal["wrk", "python"]

# What kube-apiserver v1.36 sends with every review (tests/fixtures/admission-reviews/README):
# the webhook's timeoutSeconds as a query parameter, and these headers.
QUERY = "?timeout=5s"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, */*",
    "Accept-Encoding": "gzip",
    "User-Agent": "kube-apiserver-admission",
}

LUA_HEADERS = "{" + ", ".join(f'["{name}"] = "{value}"' for name, value in HEADERS.items()) + "}"

# wrk needs a script to POST bodies, to give each request a uid of its own (the last 12 digits
# of the captured uid become a counter, as ``Body.stamp`` does), to close connections, and to
# print percentiles. Arguments: path, close|keep-alive, then a file and its uid per body.
WRK_SCRIPT = """\
local requests = {}
local next_index = 0
local sent = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  local headers = {HEADERS}
  if args[2] == "close" then headers["Connection"] = "close" end
  for k = 3, #args, 2 do
    local file = assert(io.open(args[k], "rb"))
    local body = file:read("*a")
    file:close()
    local request = wrk.format("POST", args[1], headers, body)
    local _, last = request:find(args[k + 1], 1, true)
    assert(last, "no uid " .. args[k + 1] .. " in " .. args[k])
    requests[#requests + 1] = {request:sub(1, last - 12), request:sub(last + 1)}
  end
end

function request()
  next_index = next_index % #requests + 1
  sent = sent + 1
  local parts = requests[next_index]
  return parts[1] .. string.format("%04x%08x", thread_number, sent % 0x100000000) .. parts[2]
end

function done(summary, latency, _requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests": %d, "duration_us": %d, "errors": %d, "non_2xx": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
""".replace("{HEADERS}", LUA_HEADERS)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    errors: int  # connection errors, timeouts and non-2xx answers
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_cpu_s: float = 0.0  # CPU time the server's workers used during the run
    # mlgate's own view: p50 and p99 of its decision lines' latency_ms (on_post to answer)
    handler_p50_ms: float | None = None
    handler_p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else 0.0


def pick_client(requested: str) -> Client:
    """``wrk`` when asked for or, with ``auto``, when it is installed; else ``python``."""
    if requested == "python":
        return "python"
    if shutil.which("wrk"):
        return "wrk"
    if requested == "wrk":
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    return "python"


def run_load(
    client: Client,
    *,
    url: str,
    path: str,
    bodies: Sequence[Body],
    connections: int,
    new_connection: bool,
    seconds: float,
    workdir: Path,
) -> LoadResult:
    if client == "wrk":
        return run_wrk(
            url=url,
            path=path,
            bodies=bodies,
            connections=connections,
            new_connection=new_connection,
            seconds=seconds,
            workdir=workdir,
        )
    return run_python_client(
        url=url,
        path=path,
        bodies=bodies,
        connections=connections,
        new_connection=new_connection,
        seconds=seconds,
    )


def run_wrk(
    *,
    url: str,
    path: str,
    bodies: Sequence[Body],
    connections: int,
    new_connection: bool,
    seconds: float,
    workdir: Path,
) -> LoadResult:
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    files = [workdir / f"{body.name}.body" for body in bodies]
    for file, body in zip(files, bodies, strict=True):
        file.write_bytes(body.data)  # as the Python client sends it, not as the fixture is stored
    threads = min(2, connections)
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", str(script), url, "--",
        path + QUERY, "close" if new_connection else "keep-alive",
        *(str(arg) for file, b in zip(files, bodies, strict=True) for arg in (file, b.uid)),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    data = json.loads(line.removeprefix("RESULT "))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["errors"] + data["non_2xx"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


def run_python_client(
    *,
    url: str,
    path: str,
    bodies: Sequence[Body],
    connections: int,
    new_connection: bool,
    seconds: float,
) -> LoadResult:
    """``connections`` threads, each sending the bodies in turn for ``seconds``."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = insecure_client_context()
    headers = dict(HEADERS)
    if new_connection:
        headers["Connection"] = "close"
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    start = time.perf_counter()
    deadline = start + seconds

    def drive(slot: int) -> None:
        conn: http.client.HTTPSConnection | None = None
        index = slot
        while time.perf_counter() < deadline:
            # A uid of its own for every request: slot in the high digits, a count below.
            body = bodies[index % len(bodies)].stamp(slot << 32 | index)
            index += 1
            began = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=5)
                conn.request("POST", path + QUERY, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[slot] += 1
                    continue
                latencies[slot].append(time.perf_counter() - began)
            except OSError:
                errors[slot] += 1
                conn = None
                continue
            if new_connection:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    merged = sorted(x for slot in latencies for x in slot)
    return LoadResult(
        requests=len(merged),
        seconds=elapsed,
        errors=sum(errors),
        p50_ms=percentile(merged, 50) * 1000,
        p90_ms=percentile(merged, 90) * 1000,
        p99_ms=percentile(merged, 99) * 1000,
    )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values (0 when there are none)."""
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
