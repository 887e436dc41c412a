"""One stop for a worker's threads, and the first error any of them raised.

A worker starts side threads (receivers, heartbeat, ledger prune, lake writer,
health probes). As procrastinate does with its side tasks, any one of them
failing stops the worker with that error: `Threads` runs each body, records
the first exception, sets the one `stop` event every thread waits on, and
`join` re-raises that error once all have ended (or the deadline passed).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class Threads:
    """Named daemon threads sharing one `stop` event; the first error stops them all."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._error: BaseException | None = None
        self._error_lock = threading.Lock()

    @property
    def error(self) -> BaseException | None:
        """The first error a thread raised (or `fail` was given), if any."""
        with self._error_lock:
            return self._error

    def fail(self, exc: BaseException) -> None:
        """Record `exc` if it is the first error, and set the stop."""
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self.stop.set()

    def start(self, name: str, target: Callable[[], object]) -> threading.Thread:
        """Start `target` in a daemon thread called `name`; what it raises stops all."""

        def body() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - re-raised by join
                self.fail(exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        with self._threads_lock:
            self._threads.append(thread)
        thread.start()
        return thread

    def join(self, timeout: float) -> None:
        """Set the stop, wait up to `timeout` in all for the threads, re-raise the first error."""
        self.end(timeout)
        self.raise_error()

    def end(self, timeout: float) -> list[str]:
        """Set the stop and wait up to `timeout` in all for the threads; the names still running."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = [t.name for t in threads if t.is_alive()]
        if left:
            log.warning("threads still running at shutdown: %s", ", ".join(left))
        return left

    def raise_error(self) -> None:
        """Raise the first recorded error, if any."""
        if (error := self.error) is not None:
            raise error


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop` while inside (only on the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        # Only set flags: logging here could deadlock on the logging lock.
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            name = signal.Signals(received[0]).name
            log.info(
                "signal received, stopped after the batch in hand",
                extra={"fields": {"signal": name}},
            )
