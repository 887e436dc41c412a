"""/metrics, /healthz and /readyz on the metrics port.

* ``/healthz`` (liveness): 200 while the loop completes calls — a batch, a
  poll of an empty queue, even a failed call it will retry — and 503 once it
  has completed none for `stall_after` seconds: its threads are stuck, and a
  restart is the cure.
* ``/readyz`` (readiness): 200 only while PostgreSQL and SQS both answered
  the last probe, made every `probe_every` seconds by a thread of its own
  (so an idle worker notices too); 503 as soon as one fails or a probe has
  not finished within `fresh_for` seconds (a hung server).
* ``/metrics``: the Prometheus exposition; anything else is 404.

`Health` decides from recorded facts and a given `now`, so it is tested
without a server or a clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from login_etl.errors import ConfigError
from login_etl.metrics import Metrics, Stats

log = logging.getLogger(__name__)


class Health:
    """Liveness from the loop's last activity, readiness from the probes' last answers."""

    def __init__(
        self, stats: Stats, checks: Mapping[str, Callable[[], object]], *, stall_after: float
    ) -> None:
        self.stats = stats
        self.checks = dict(checks)
        self.stall_after = stall_after
        self._answers: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def record(self, name: str, ok: bool, now: float) -> None:
        """Remember the answer of probe `name` at `now`."""
        with self._lock:
            self._answers[name] = (ok, now)

    def live(self, now: float) -> bool:
        """True unless the loop has completed no call for `stall_after` seconds."""
        return now - self.stats.last_activity_at < self.stall_after

    def ready(self, now: float, fresh_for: float = 5.0) -> dict[str, bool]:
        """Each dependency → whether its last probe succeeded within `fresh_for` seconds."""
        with self._lock:
            answers = dict(self._answers)
        return {
            name: name in answers and answers[name][0] and now - answers[name][1] <= fresh_for
            for name in self.checks
        }

    def probe(self, timeout: float) -> None:
        """Run every check at once, each given `timeout` seconds; record the answers."""
        results: dict[str, bool] = {}

        def one(name: str, check: Callable[[], object]) -> None:
            try:
                check()
                results[name] = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                log.debug("readiness probe %s failed: %s", name, type(exc).__name__)
                results[name] = False

        threads = [
            threading.Thread(target=one, args=item, name=f"probe-{item[0]}", daemon=True)
            for item in self.checks.items()
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        now = time.monotonic()
        for name in self.checks:
            self.record(name, results.get(name, False), now)  # not finished: a hung server


def probe_forever(health: Health, stop: threading.Event, every: float = 2.0) -> None:
    """Probe every `every` seconds until `stop` is set (a daemon thread)."""
    while not stop.is_set():
        health.probe(timeout=every)
        stop.wait(every)


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics
    health: Health

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        """Route /metrics, /healthz and /readyz; 404 for anything else."""
        path = self.path.split("?", 1)[0]
        now = time.monotonic()
        if path == "/metrics":
            body, ctype = self.metrics.render()
            self._send(200, body, ctype)
        elif path == "/healthz":
            live = self.health.live(now)
            self._send(200 if live else 503, b"ok\n" if live else b"stuck\n")
        elif path == "/readyz":
            ready = self.health.ready(now)
            text = "".join(f"{k} {'ok' if v else 'down'}\n" for k, v in sorted(ready.items()))
            self._send(200 if all(ready.values()) else 503, text.encode())
        else:
            self._send(404, b"not found\n")

    def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes are not worth a log line each."""


def serve(
    metrics: Metrics, health: Health, port: int, addr: str = "0.0.0.0"
) -> ThreadingHTTPServer:  # noqa: S104 - a pod's port
    """Serve the three endpoints in a daemon thread; `shutdown()` the result to stop."""
    handler = type("Handler", (_Handler,), {"metrics": metrics, "health": health})
    try:
        server = ThreadingHTTPServer((addr, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}: choose another "
            "--metrics-port / LOGIN_ETL_METRICS_PORT, or stop what holds that port"
        ) from exc
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
