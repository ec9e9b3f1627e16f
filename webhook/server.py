"""Run the app on gunicorn over TLS, configured for the API server's traffic.

Choices, each measured on this stack (PERFORMANCE.md, and ``bench/`` in this repository):
- ``gthread`` workers: the API server keeps connections alive and sends many requests over
  each; ``sync`` workers close every connection, so every request would pay a TLS handshake
  (130-260 req/s against ~3,400 req/s).
- ``reuse_port``: without it, long-lived connections pile onto one worker.
- one SSL context per worker, built once and rebuilt only when the certificate files change:
  gunicorn's default builds a new context and rereads the files on every accepted connection.
  The rebuild also makes a renewed certificate (a mounted Secret updated in place) take effect
  without restarting workers or dropping connections.
- ``keepalive`` well above gunicorn's 2 s default, so the API server's idle connections are not
  closed between bursts.
"""

from __future__ import annotations

import gc
import logging
import logging.config
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from webhook import metrics
from webhook.logwriter import BackgroundHandler

log = logging.getLogger("mlgate.server")

# How often a worker looks at the certificate files for a renewed pair, in seconds.
FILE_CHECK_INTERVAL = 0.25


@dataclass(frozen=True)
class ServerOptions:
    bind: str = "127.0.0.1:8443"
    workers: int = 2
    threads: int = 4
    cert_file: Path = Path(".mlgate/tls.crt")
    key_file: Path = Path(".mlgate/tls.key")
    keepalive: int = 75
    timeout: int = 30
    graceful_timeout: int = 20
    log_level: str = "info"
    extra: dict[str, Any] = field(default_factory=dict)


class ReloadingSSLContext:
    """One ``SSLContext`` per process, rebuilt when the certificate or key file changes.

    A pair that does not load (say the certificate was replaced before its key) keeps the
    previous context in force, so handshakes never fail during a rotation; the next connection
    tries again.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._stamp: tuple[Any, ...] | None = None
        self._next_check = 0.0

    def _file_stamp(self) -> tuple[Any, ...]:
        stamp = []
        for path in (self.cert_file, self.key_file):
            st = os.stat(path)
            stamp.append((os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamp)

    def get(self, factory: Callable[[], ssl.SSLContext] | None = None) -> ssl.SSLContext:
        # Called for every accepted connection: look at the files at most every
        # FILE_CHECK_INTERVAL (two stats and two realpaths are ~50 us, bench/).
        now = time.monotonic()
        if self._context is not None and now < self._next_check:
            return self._context
        self._next_check = now + FILE_CHECK_INTERVAL
        try:
            stamp = self._file_stamp()
        except OSError as exc:
            if self._context is not None:
                log.warning("certificate files unreadable (%s); keeping the loaded ones", exc)
                return self._context
            raise
        if stamp == self._stamp and self._context is not None:
            return self._context
        with self._lock:
            if stamp == self._stamp and self._context is not None:
                return self._context
            try:
                context = build_server_context(self.cert_file, self.key_file)
            except (ssl.SSLError, OSError, ValueError) as exc:
                if self._context is None:
                    raise
                log.warning("new certificate pair does not load yet (%s); keeping the old", exc)
                return self._context
            if self._context is not None:
                log.info("reloaded TLS certificate %s", self.cert_file)
            self._context, self._stamp = context, stamp
            publish_cert_expiry(self.cert_file)
            return context


def build_server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS server context: TLS 1.2+, the certificate chain, no client certificates."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    context.verify_mode = ssl.CERT_NONE
    # NOTE: no TLS 1.3 session tickets: the API server's webhook client (Go, no
    # ClientSessionCache) never resumes a session, and issuing two tickets per handshake was
    # ~10% of its server CPU (bench/).
    context.num_tickets = 0
    return context


def publish_cert_expiry(cert_file: Path) -> None:
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        metrics.set_cert_expiry(cert.not_valid_after_utc.timestamp())
    except (OSError, ValueError) as exc:
        log.warning("cannot read the expiry of %s: %s", cert_file, exc)


def build_decision_handler() -> BackgroundHandler:
    """JSON lines on stdout, formatted and written by a thread of their own (the decision log
    is written on every request; see ``webhook.logwriter``)."""
    from webhook.jsonlog import JsonLogFormatter

    stdout = logging.StreamHandler(sys.stdout)
    stdout.setFormatter(JsonLogFormatter())
    return BackgroundHandler(stdout)


def logging_config(level: str) -> dict[str, Any]:
    """JSON lines on stdout for every logger, gunicorn's included."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "webhook.jsonlog.JsonLogFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            },
            "decisions": {"()": build_decision_handler},
        },
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            "gunicorn.access": {"level": "WARNING", "handlers": [], "propagate": True},
            "mlgate.decisions": {
                "level": level.upper(),
                "handlers": ["decisions"],
                "propagate": False,
            },
            # The audit store prints its own bare JSON lines.
            "mlgate.audit.trail": {"level": "INFO", "handlers": [], "propagate": False},
        },
    }


class WebhookLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, minus the access-log fields of requests nobody will log.

    With a logging config, gunicorn builds every request's access-log fields (headers,
    times, a dozen string formats) before ``gunicorn.access`` drops them at its WARNING level;
    that was ~2% of a loaded worker (bench/).
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if self.access_log.isEnabledFor(logging.INFO):
            super().access(resp, req, environ, request_time)


class MasterService(Protocol):
    """Something the master runs beside the workers (the audit writer process)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code.

    ``app_factory`` runs in each worker after the fork and returns the WSGI app and a function
    that releases what the app holds (audit channel, cluster watches), called at worker exit.
    ``services`` start in the master before the first worker forks (gunicorn's
    ``when_ready``) and stop after the last worker has exited (``on_exit``).
    """

    def __init__(
        self,
        app_factory: Callable[[], tuple[Any, Callable[[], None]]],
        options: ServerOptions,
        *,
        services: Sequence[MasterService] = (),
    ) -> None:
        self.app_factory = app_factory
        self.services = tuple(services)
        self._close: Callable[[], None] | None = None
        self.options = options
        self.ssl = ReloadingSSLContext(options.cert_file, options.key_file)
        self._metrics_dir: str | None = None  # made here, removed at the end
        super().__init__()

    def load_config(self) -> None:
        opts = self.options
        ssl_holder = self.ssl

        def ssl_context(_conf: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return ssl_holder.get()

        def child_exit(_server: Any, worker: Any) -> None:
            metrics.mark_worker_dead(worker.pid)

        def worker_exit(_server: Any, _worker: Any) -> None:
            if self._close is not None:
                self._close()
            metrics.flush()  # this worker's last counts, before its values stop changing

        def when_ready(_server: Any) -> None:
            for service in self.services:
                service.start()

        def on_exit(_server: Any) -> None:
            self._stop_services()

        config: dict[str, Any] = {
            "bind": [opts.bind],
            "workers": opts.workers,
            "worker_class": "gthread",
            "threads": opts.threads,
            "reuse_port": True,
            "keepalive": opts.keepalive,
            "timeout": opts.timeout,
            "graceful_timeout": opts.graceful_timeout,
            "certfile": str(opts.cert_file),
            "keyfile": str(opts.key_file),
            "ssl_context": ssl_context,
            "child_exit": child_exit,
            "worker_exit": worker_exit,
            "when_ready": when_ready,
            "on_exit": on_exit,
            "proc_name": "mlgate",
            "logconfig_dict": logging_config(opts.log_level),
            "logger_class": WebhookLogger,
            "loglevel": opts.log_level,
            "accesslog": None,
            "limit_request_line": 8190,
            # NOTE: no gunicorn control socket (gunicorn >= 25.1 opens one in $HOME by
            # default): a management interface nobody here uses, one path shared by every
            # gunicorn of the user, and a write into a read-only root file system in a pod.
            "control_socket_disable": True,
            **opts.extra,
        }
        for key, value in config.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        app, self._close = self.app_factory()
        # NOTE: the modules and policies loaded so far live as long as the worker: leave them
        # out of the garbage collector's full passes, which otherwise walk ~75,000 objects
        # (tens of ms) in the middle of some request and set the tail latency.
        gc.freeze()
        # NOTE: no log line shows the thread, the process or the source line (gunicorn's lines
        # go through JsonLogFormatter too), and every admission logs a decision: skip working
        # them out for each record (the logging HOWTO's "Optimization" section).
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False
        return app

    def run(self) -> None:
        # NOTE: prometheus multiprocess files must live in a folder the master sets up before
        # any worker forks, and that no earlier run left values in (enable_multiprocess clears
        # a folder given through the environment).
        directory = os.environ.get(metrics.MULTIPROC_ENV)
        if not directory:
            # NOTE: not a TemporaryDirectory: its finalizer runs at the exit of every forked
            # worker too, and the first worker to exit (a reload, a restart) removed the
            # folder from under the others.
            directory = self._metrics_dir = tempfile.mkdtemp(prefix="mlgate-metrics-")
        metrics.enable_multiprocess(directory)
        # Load the certificate once in the master: a bad pair fails here, not per connection.
        self.ssl.get()
        master = os.getpid()
        try:
            super().run()
        finally:
            # NOTE: a worker is forked inside super().run(), so its own exit (SystemExit)
            # passes through here too: only the master stops what the master started.
            if os.getpid() == master:
                self._stop_services()  # when gunicorn ends without its on_exit
                if self._metrics_dir is not None:
                    shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _stop_services(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
