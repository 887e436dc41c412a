"""/metrics, /healthz and /readyz on the metrics port.

* ``/healthz`` (liveness): 200 while every loop thread is inside a bounded
  wait or on its way to the next one (`liveness.Waits`); 503, naming the
  threads, once one has overrun its bound by `slack` seconds or died: it is
  stuck, and a restart is the cure. A worker waiting out an outage within
  its bounds (a write held by a hung PostgreSQL, a backoff) is alive.
* ``/readyz`` (readiness): 200 only while PostgreSQL and SQS both answered
  the last probe, made every `probe_every` seconds by a thread of its own
  (so an idle worker notices too); 503 as soon as one fails or a probe has
  not finished within `fresh_for` seconds (a hung server).
* ``/metrics``: the Prometheus exposition; anything else is 404.

`Health` decides from recorded facts and a given `now`, so it is tested
without a server or a clock.

The server cannot be held (`Server`): one thread serves every connection
(asyncio), each connection must send its request and take its answer
within `timeout` seconds, and past `max_connections` the connection open
longest is closed at once to make room. A flood of half-sent requests so
costs neither threads nor descriptors beyond the cap, and a probe, whose
request arrives whole, is still answered. A client gone mid-answer is one
debug line, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus

from login_etl.errors import ConfigError
from login_etl.metrics import Metrics, Stats

log = logging.getLogger(__name__)


# Seconds a loop thread may spend between two bounded waits: the work of one batch,
# with room for a starved CPU. A stuck thread fails /healthz this long after its bound.
SLACK = 30.0
# Seconds a connection has to send its request and take the answer.
TIMEOUT = 5.0
# Connections open at once; scrapes and probes need a handful.
MAX_CONNECTIONS = 64
# Longest request head read (request line and headers).
_HEAD_LIMIT = 8192


class Health:
    """Liveness from the loop threads' bounded waits, readiness from the probes' answers."""

    def __init__(
        self, stats: Stats, checks: Mapping[str, Callable[[], object]], *, slack: float = SLACK
    ) -> None:
        self.stats = stats
        self.checks = dict(checks)
        self.slack = slack
        self._answers: dict[str, tuple[bool, float]] = {}
        self._lock = threading.Lock()

    def record(self, name: str, ok: bool, now: float) -> None:
        """Remember the answer of probe `name` at `now`."""
        with self._lock:
            self._answers[name] = (ok, now)

    def stuck(self, now: float) -> list[str]:
        """Loop threads past their wait's bound by more than `slack` seconds, or dead."""
        return self.stats.waits.stuck(now, self.slack)

    def live(self, now: float) -> bool:
        """True unless a loop thread is stuck."""
        return not self.stuck(now)

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


def answer(metrics: Metrics, health: Health, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) for a GET of `path`."""
    now = time.monotonic()
    if path == "/metrics":
        body, ctype = metrics.render()
        return 200, body, ctype
    if path == "/healthz":
        stuck = health.stuck(now)
        if stuck:
            return 503, f"stuck: {' '.join(stuck)}\n".encode(), _TEXT
        return 200, b"ok\n", _TEXT
    if path == "/readyz":
        ready = health.ready(now)
        text = "".join(f"{k} {'ok' if v else 'down'}\n" for k, v in sorted(ready.items()))
        return 200 if all(ready.values()) else 503, text.encode(), _TEXT
    return 404, b"not found\n", _TEXT


_TEXT = "text/plain; charset=utf-8"


class Server:
    """HTTP GET of a few paths on one event loop in a daemon thread; `shutdown()` stops it.

    `route(path)` gives (status, body, content type); it runs on the loop's
    thread, so it must be quick.
    """

    def __init__(
        self,
        route: Callable[[str], tuple[int, bytes, str]],
        addr: str,
        port: int,
        *,
        timeout: float = TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._route = route
        self.timeout = timeout
        self.max_connections = max_connections
        self._open: dict[asyncio.StreamWriter, None] = {}  # oldest first
        self._loop = asyncio.new_event_loop()
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        # "::" means every interface, IPv4 ones included, where the system allows it.
        dualstack = addr == "::" and socket.has_dualstack_ipv6()
        sock = socket.create_server(
            (addr, port), family=family, backlog=128, dualstack_ipv6=dualstack
        )
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, sock=sock, limit=_HEAD_LIMIT)
        )
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_forever()
        self._loop.run_until_complete(self._close())
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop serving and close every connection."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=self.timeout)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._open)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open[writer] = None
        if len(self._open) > self.max_connections:
            oldest = next(iter(self._open))
            del self._open[oldest]
            oldest.transport.abort()  # its read ends at once
        done = False
        try:
            async with asyncio.timeout(self.timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self._response(head))
                await writer.drain()
            done = True
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("metrics port: connection dropped (%s)", type(exc).__name__)
        except asyncio.LimitOverrunError:
            log.debug("metrics port: request head over %d bytes", _HEAD_LIMIT)
        finally:
            self._open.pop(writer, None)
            if done:
                writer.close()  # the answer is with the kernel: close after it
            else:
                writer.transport.abort()

    def _response(self, head: bytes) -> bytes:
        """The whole response to one request head; never raises."""
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            status, body, ctype = 400, b"bad request\n", _TEXT
        elif parts[0] not in (b"GET", b"HEAD"):
            status, body, ctype = 405, b"method not allowed\n", _TEXT
        else:
            path = parts[1].decode("latin-1").split("?", 1)[0]
            try:
                status, body, ctype = self._route(path)
            except Exception as exc:  # noqa: BLE001 - one line, and a 500 for the client
                log.warning("metrics port: %s failed: %s", path[:100], type(exc).__name__)
                status, body, ctype = 500, b"internal error\n", _TEXT
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        text = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return text if parts[:1] == [b"HEAD"] else text + body


def serve(
    metrics: Metrics,
    health: Health,
    port: int,
    addr: str = "127.0.0.1",
    *,
    timeout: float = TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> Server:
    """Serve the three endpoints in a daemon thread; `shutdown()` the result to stop."""
    try:
        return Server(
            lambda path: answer(metrics, health, path),
            addr,
            port,
            timeout=timeout,
            max_connections=max_connections,
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}: choose another "
            "--metrics-port / LOGIN_ETL_METRICS_PORT (or --metrics-address), or stop what "
            "holds that port"
        ) from exc
