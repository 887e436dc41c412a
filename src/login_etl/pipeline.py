"""The loop: receivers → bounded buffer → one writer → deletes after commit.

Threads::

    receiver × N ──► buffer (≤ max_in_flight messages held in all) ──► writer
                                                                         │ transform (pure)
                                                                         │ sink.write (one tx)
                                                                         ▼
                     heartbeat: extends visibility       deleter pool: delete_message_batch

A message is deleted only after the transaction holding its row or rejection
commits. A crash anywhere before that leaves it in the queue; the ledger
turns its redelivery into a skip. The writer is the thread that calls `run`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from login_etl.errors import LoginEtlError, RetryableError, RetryTimeExceeded
from login_etl.masking import Masker
from login_etl.metrics import Stats
from login_etl.retry import backoff, call_with_retry
from login_etl.sink import Batch, Sink, WriteResult
from login_etl.source import Source
from login_etl.transform import Message, Rejection, Row, reject, transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How the loop runs; `config.Settings` fills these from flags and env."""

    concurrency: int = 4
    batch_size: int = 500
    batch_wait: float = 1.0
    wait_seconds: int = 20
    max_in_flight: int = 2000
    drain: bool = False
    max_messages: int | None = None
    max_retry_time: float = 300.0
    shutdown_timeout: float = 30.0
    heartbeat: bool = True


class _Capacity:
    """Counts messages held; receivers wait while the buffer is full."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._cond = threading.Condition()

    def acquire(self, most: int, timeout: float) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self._free > 0, timeout):
                return 0
            n = min(most, self._free)
            self._free -= n
            return n

    def release(self, n: int) -> None:
        if n:
            with self._cond:
                self._free += n
                self._cond.notify_all()


class Pipeline:
    """Moves messages from a source to a sink until stopped, drained or a limit is hit."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        masker: Masker,
        options: Options | None = None,
        *,
        stats: Stats | None = None,
        after_commit: Callable[[Sequence[Message], WriteResult], None] | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.masker = masker
        self.options = options or Options()
        self.stats = stats or Stats()
        # Test hook: runs after commit, before delete (crash-between-commit-and-delete tests).
        self._after_commit = after_commit
        self._buffer: queue.Queue[Message] = queue.Queue()
        self._capacity = _Capacity(self.options.max_in_flight)
        self._stopping = threading.Event()
        self._source_done = threading.Event()
        self._fatal: BaseException | None = None
        self._lock = threading.Lock()
        self._quota = self.options.max_messages
        self._in_hand: dict[str, tuple[Message, float]] = {}
        self._receivers_alive = 0
        self._visibility = 30

    # -- control ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (signal-safe)."""
        self._stopping.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = exc
        self._stopping.set()

    # -- receivers -------------------------------------------------------

    def _reserve(self, most: int) -> int:
        """Take up to `most` from the --max-messages quota."""
        with self._lock:
            if self._quota is None:
                return most
            n = min(most, self._quota)
            self._quota -= n
            return n

    def _unreserve(self, n: int) -> None:
        with self._lock:
            if self._quota is not None:
                self._quota += n

    def _receive_loop(self) -> None:
        try:
            self._receive_until_done()
        except BaseException as exc:  # noqa: BLE001 - handed to the writer, which re-raises
            self._fail(exc)
        finally:
            with self._lock:
                self._receivers_alive -= 1

    def _receive_until_done(self) -> None:
        opts = self.options
        failing_since: float | None = None
        attempt = 0
        # Draining polls briefly so every receiver notices the empty queue soon.
        wait = min(opts.wait_seconds, 1) if opts.drain else opts.wait_seconds
        while not self._stopping.is_set() and not self._source_done.is_set():
            slots = self._capacity.acquire(10, timeout=0.2)
            if not slots:
                continue
            want = self._reserve(slots)
            if want == 0:
                self._capacity.release(slots)
                self._source_done.set()  # quota reached
                return
            try:
                messages = self.source.receive(want, wait)
            except RetryableError as exc:
                self._capacity.release(slots)
                self._unreserve(want)
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > opts.max_retry_time:
                    raise RetryTimeExceeded(
                        f"gave up after {opts.max_retry_time:g}s: {exc}"
                    ) from exc
                log.warning("receive failed, retrying: %s", exc)
                self.stats.add(retries=1)
                self._stopping.wait(backoff(attempt))
                attempt += 1
                continue
            failing_since, attempt = None, 0
            self._capacity.release(slots - len(messages))
            self._unreserve(want - len(messages))
            if messages:
                self._take(messages)
            elif opts.drain and self._queue_empty():
                self._source_done.set()

    def _queue_empty(self) -> bool:
        try:
            return self.source.info().visible == 0
        except RetryableError:
            return False

    def _take(self, messages: list[Message]) -> None:
        now = time.monotonic()
        with self._lock:
            for m in messages:
                self._in_hand[m.receipt] = (m, now)
        self.stats.add(received=len(messages), in_hand=len(messages))
        if self._stopping.is_set():
            self._release(messages)
            return
        for m in messages:
            self._buffer.put(m)

    # -- writer ----------------------------------------------------------

    def _collect(self) -> list[Message]:
        """Up to batch_size messages, waiting at most batch_wait after the first."""
        opts = self.options
        try:
            first = self._buffer.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + opts.batch_wait
        while len(batch) < opts.batch_size and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._buffer.get(timeout=min(left, 0.1)))
            except queue.Empty:
                if self._receivers_idle():
                    break
        return batch

    def _receivers_idle(self) -> bool:
        with self._lock:
            return self._receivers_alive == 0

    def run(self) -> Stats:
        """Run until stopped, drained or --max-messages; return the counters.

        Raises the first fatal error (including RetryTimeExceeded) after
        handing unprocessed messages back to the queue.
        """
        self._start()
        deleter = ThreadPoolExecutor(max_workers=max(2, self.options.concurrency))
        try:
            # On stop, the batch being collected is finished; the rest is released.
            while not self._stopping.is_set():
                batch = self._collect()
                if batch:
                    self._process(batch, deleter)
                elif self._receivers_idle() and self._buffer.empty():
                    break
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._stopping.set()
            deleter.shutdown(wait=True)
            self._shutdown_receivers()
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _start(self) -> None:
        if self.options.heartbeat:
            try:
                self._visibility = self.source.info().visibility_timeout
            except RetryableError:
                log.warning("could not read the queue's visibility timeout; assuming 30s")
        self._receivers_alive = self.options.concurrency
        self._threads = [
            threading.Thread(target=self._receive_loop, name=f"receiver-{i}", daemon=True)
            for i in range(self.options.concurrency)
        ]
        if self.options.heartbeat:
            self._threads.append(
                threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
            )
        for t in self._threads:
            t.start()

    def _shutdown_receivers(self) -> None:
        """Wait for receivers (bounded), then hand back whatever is still buffered."""
        deadline = time.monotonic() + self.options.shutdown_timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        leftover: list[Message] = []
        while True:
            try:
                leftover.append(self._buffer.get_nowait())
            except queue.Empty:
                break
        if leftover:
            self._release(leftover)

    def _release(self, messages: list[Message]) -> None:
        """Make messages visible again at once so another worker takes them."""
        try:
            self.source.change_visibility(messages, 0)
            self.stats.add(released=len(messages))
        except LoginEtlError as exc:
            log.warning("could not release %d message(s): %s", len(messages), exc)
        self._forget(messages)

    def _forget(self, messages: Sequence[Message]) -> None:
        with self._lock:
            for m in messages:
                self._in_hand.pop(m.receipt, None)
        self._capacity.release(len(messages))
        self.stats.add(in_hand=-len(messages))

    def _split(self, messages: list[Message]) -> Batch:
        by_id = {m.message_id: m for m in messages}
        rows: list[Row] = []
        rejections: list[Rejection] = []
        for m in messages:
            out = transform(m, self.masker)
            (rows if isinstance(out, Row) else rejections).append(out)  # type: ignore[arg-type]

        def reject_row(message_id: str, reason: str) -> Rejection:
            return reject(by_id[message_id], reason, self.masker)

        return Batch(rows, rejections, reject_row)

    def _process(self, messages: list[Message], deleter: ThreadPoolExecutor) -> None:
        started = time.monotonic()
        batch = self._split(messages)
        try:
            result = self._write_with_retry(batch)
        except BaseException:
            self._release(messages)  # not committed: let another worker have them now
            raise
        if self._after_commit is not None:
            self._after_commit(messages, result)
        self.stats.committed(result.loaded, result.rejected, result.duplicates, result.reasons)
        log.info(
            "batch committed",
            extra={
                "fields": {
                    "messages": len(messages),
                    "loaded": result.loaded,
                    "rejected": result.rejected,
                    "duplicates": result.duplicates,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                }
            },
        )
        with self._lock:
            for m in messages:  # committed: the heartbeat no longer needs them
                self._in_hand.pop(m.receipt, None)
        for i in range(0, len(messages), 10):
            deleter.submit(self._delete, messages[i : i + 10])

    def _write_with_retry(self, batch: Batch) -> WriteResult:
        return call_with_retry(
            "batch write",
            lambda: self.sink.write(batch),
            max_time=self.options.max_retry_time,
            on_retry=lambda: self.stats.add(retries=1),
            stop=self._stopping,  # SIGTERM during an outage: give up, do not wait it out
        )

    def _delete(self, messages: Sequence[Message]) -> None:
        failed: list[str] = []
        for attempt in range(4):
            try:
                failed = self.source.delete(messages)
                break
            except RetryableError as exc:
                log.warning("delete failed, retrying: %s", exc)
                self.stats.add(retries=1)
                time.sleep(backoff(attempt))
        else:
            failed = [m.message_id for m in messages]
        # A message not deleted comes back later and is skipped by the ledger.
        self.stats.add(deleted=len(messages) - len(failed), delete_failures=len(failed))
        self._forget(messages)

    # -- heartbeat -------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        # A message is extended at most a third plus a tick (half the timeout) after
        # its last extension: the other half is slack for slow rounds of SQS calls.
        # Fixed-rate ticks, so a slow round does not push the next one back.
        period = max(0.2, self._visibility / 6)
        next_tick = time.monotonic()
        while True:
            next_tick = max(next_tick + period, time.monotonic())
            if self._stopping.wait(next_tick - time.monotonic()):
                return
            self._extend_due()

    def _extend_due(self) -> None:
        """Extend messages held longer than a third of the visibility timeout."""
        now = time.monotonic()
        due_age = self._visibility / 3
        with self._lock:
            due = [m for m, since in self._in_hand.values() if now - since >= due_age]
        if not due:
            return
        try:
            failed = set(self.source.change_visibility(due, self._visibility))
        except LoginEtlError as exc:
            log.warning("visibility extension failed: %s", exc)
            return
        with self._lock:
            for m in due:
                if m.message_id not in failed and m.receipt in self._in_hand:
                    self._in_hand[m.receipt] = (m, now)
        self.stats.add(extended=len(due) - len(failed))
