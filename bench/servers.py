"""Start and stop the servers under test, each a real gunicorn over TLS in its own process."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bodies import ROOT


@dataclass
class Server:
    """A running server: its gunicorn master process, port and log file."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_file: Path
    workers: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: the master's child processes but the audit writer."""
        return [pid for pid in find_children(self.process.pid) if not is_audit_writer(pid)]

    def audit_writer_pids(self) -> list[int]:
        """mlgate's audit writer process (``webhook.audit.writer``), one or none."""
        return [pid for pid in find_children(self.process.pid) if is_audit_writer(pid)]

    def wait_for_audit_writer(self, timeout: float = 30) -> None:
        """Until the audit writer has stored what it was sent: its CPU time stops growing.

        NOTE: it gives way to the workers (``CpuYielder``) and falls a little behind while they
        are saturated (~0.4 s after 10 s at 16 connections); the next case must not pay for it.
        """
        deadline = time.monotonic() + timeout
        last = sum(process_cpu_seconds(pid) for pid in self.audit_writer_pids())
        while time.monotonic() < deadline:
            time.sleep(0.2)  # longer than the writer's poll (50 ms)
            now = sum(process_cpu_seconds(pid) for pid in self.audit_writer_pids())
            if now == last:
                return
            last = now

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the workers and the audit writer have used so far."""
        return sum(process_cpu_seconds(pid) for pid in find_children(self.process.pid))

    def stop(self, timeout: float = 30) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_mlgate(
    *,
    workdir: Path,
    workers: int,
    threads: int,
    policies: Path | None = None,
    name: str = "mlgate",
    root: Path = ROOT,
) -> Server:
    """``mlgate serve`` as an operator runs it: its own dev certificate in a fresh state folder,
    the default policies (or ``policies``), no cluster; the code of the checkout at ``root``."""
    port = free_port()
    state = workdir / f"state-{name}"
    args = [
        sys.executable, "-m", "webhook.cli", "serve",
        "--bind", f"127.0.0.1:{port}",
        "--state-dir", str(state),
        "--workers", str(workers), "--threads", str(threads),
        "--no-cluster",
        *(["--policies", str(policies)] if policies is not None else []),
    ]  # fmt: skip
    return _start(name, args, port=port, workdir=workdir, workers=workers, root=root)


def start_baseline(
    *,
    workdir: Path,
    cert: Path,
    key: Path,
    workers: int,
    threads: int,
    default_tls: bool = False,
    name: str = "baseline",
) -> Server:
    port = free_port()
    args = [
        sys.executable, "-m", "bench.baseline",
        "--bind", f"127.0.0.1:{port}",
        "--cert", str(cert), "--key", str(key),
        "--workers", str(workers), "--threads", str(threads),
        *(["--default-tls"] if default_tls else []),
    ]  # fmt: skip
    return _start(name, args, port=port, workdir=workdir, workers=workers)


def python_path(root: Path) -> str:
    """A server's PYTHONPATH: the code at ``root``; for this checkout, behind what this process
    was given (``--compiled``: the compiled build ahead of it, bench.compiled)."""
    given = os.environ.get("PYTHONPATH")
    if root != ROOT or not given:
        return str(root)
    return os.pathsep.join([given, str(root)])


def _start(
    name: str, args: list[str], *, port: int, workdir: Path, workers: int, root: Path = ROOT
) -> Server:
    log_file = workdir / f"{name}.log"
    with log_file.open("wb") as out:
        process = subprocess.Popen(
            args,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": python_path(root)},
        )
    server = Server(name=name, process=process, port=port, log_file=log_file, workers=workers)
    try:
        wait_until_healthy(server, timeout=60)
    except BaseException:
        server.stop()
        raise
    return server


def insecure_client_context() -> ssl.SSLContext:
    """The load generators do not verify the certificate (as wrk does not)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def wait_until_healthy(server: Server, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    context = insecure_client_context()
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log_file.read_text(errors="replace")
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{log}")
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=2)
            conn.request("GET", "/healthz")
            healthy = conn.getresponse().status == 200
            if healthy and len(server.worker_pids()) >= server.workers:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} did not answer /healthz within {timeout}s")


def find_children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may hold spaces; the parent pid follows its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return sorted(children)


def is_audit_writer(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"webhook.audit.writer" in command


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (from /proc/PID/stat), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of stat(5); ``fields`` starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS, from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
