"""The loop: receivers → bounded buffer → one writer → deletes after commit.

Threads, all started by `Pipeline.run` and all ended before it returns::

    receiver × N ──► buffer (≤ max_in_flight messages held in all) ──► writer (the caller)
                                                                         │ transform (pure)
                                                                         │ sink.write (one tx)
                                                                         ▼
                     heartbeat: extends leases (`Leases`)   deleter pool: delete after commit

The receivers and the heartbeat run in the `threads.Threads` registry the
pipeline is given (the service's, shared with its side threads), and the
writer and the deleters report to it: one stop event ends them all, and the
first error any thread of the registry raises stops the loop and is what
`run` raises.

Every message in hand belongs to one `leases.Hand`, from the slot a receiver
reserves to its release: deleted, handed back, failed or left over at
shutdown, it leaves through `Hand.let_go`, which gives back its slot, lease
and count in one call.

A message is deleted only after the transaction holding its row or rejection
commits. A crash anywhere before that leaves it in the queue; the ledger
turns its redelivery into a skip. Every call to the source or the sink is
retried under one policy (`retry.Retrier`), so ``--max-retry-time`` means
the same for receive, write, delete and extend.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from login_etl.errors import LoginEtlError, RetryableError, RetryTimeExceeded
from login_etl.leases import Hand
from login_etl.masking import Masker
from login_etl.metrics import Stats
from login_etl.retry import Backoff, Retrier
from login_etl.sink import Batch, Sink
from login_etl.source import SQS_BATCH_MAX, Message, Source
from login_etl.threads import Threads
from login_etl.transform import Rejection, Row, reject, transform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How the loop runs. Durations are in seconds.

    `service.pipeline_options` fills these from `config.Settings`; nothing
    else should build them by hand outside tests. A field that is a setting
    has the setting's name; the others are listed in `LOOP_ONLY`.
    """

    concurrency: int = 4
    batch_size: int = 500
    batch_wait_seconds: float = 1.0
    wait_time: int = 20
    max_in_flight: int = 2000
    drain: bool = False
    max_messages: int | None = None
    max_retry_time: float = 300.0
    shutdown_timeout: float = 30.0
    heartbeat: bool = True
    # The queue's visibility timeout; None: read from the source at start.
    visibility_timeout: int | None = None
    # Rows carry the lake record's extra fields (the lake stage is on).
    lake: bool = False
    # The flattened names the lake record keeps (LOGIN_ETL_LAKE_EXTRA_FIELDS).
    lake_extra_fields: frozenset[str] = frozenset()
    # The longest one source call (beyond a long poll's wait) and one sink write may
    # block before failing on their own (client timeouts): what liveness allows them.
    source_timeout: float = 60.0
    sink_timeout: float = 60.0


# The Options fields that are no setting: given per run, derived, or for tests.
LOOP_ONLY = frozenset(
    {
        "drain",
        "max_messages",
        "heartbeat",
        "visibility_timeout",
        "lake",
        "source_timeout",
        "sink_timeout",
    }
)


class Pipeline:
    """Moves messages from a source to a sink until stopped, drained or a limit is hit.

    A pipeline runs once: `run` a second time raises RuntimeError. Its
    threads join `threads` (a registry of its own if none is given): that
    registry's stop event stops the loop, and its first error is raised by `run`.
    """

    def __init__(
        self,
        source: Source,
        sink: Sink,
        masker: Masker,
        options: Options | None = None,
        *,
        stats: Stats | None = None,
        threads: Threads | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.masker = masker
        self.options = options or Options()
        self.stats = stats or Stats()
        self._hand = self._new_hand(self.options.visibility_timeout or 30)
        self.threads = threads or Threads()
        self._stopping = self.threads.stop
        self._source_done = threading.Event()
        self._retry = Retrier(
            self.options.max_retry_time, stop=self._stopping, on_retry=self.stats.retried
        )
        self._started = False
        self._started_lock = threading.Lock()
        self._receivers_alive = 0
        self._alive_lock = threading.Lock()
        self._delete_workers = max(2, self.options.concurrency)

    def _new_hand(self, visibility_timeout: int) -> Hand:
        opts = self.options
        return Hand(
            opts.max_in_flight,
            visibility_timeout=visibility_timeout,
            quota=opts.max_messages,
            count=self.stats.add,
        )

    # -- control ---------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (signal-safe)."""
        self._stopping.set()

    @property
    def stopping(self) -> threading.Event:
        """The event `stop` sets: what a signal handler or a caller may set directly."""
        return self._stopping

    def _watched(self, target: Callable[[], object]) -> None:
        """Run a thread body; once it is done, liveness stops watching the thread.

        A body that raises stays watched (and shows stuck): the registry
        records its error, which stops the loop and is raised by `run`.
        """
        target()
        self.stats.waits.leave()

    def _guarded(self, target: Callable[[], object]) -> None:
        """`_watched` for a deleter task (a pool thread): its error goes to the registry."""
        try:
            self._watched(target)
        except BaseException as exc:  # noqa: BLE001 - re-raised by `run`
            self.threads.fail(exc)

    # -- run -------------------------------------------------------------

    def run(self) -> Stats:
        """Run until stopped, drained or --max-messages; return the counters.

        Raises the first error of any thread in the registry (including
        RetryTimeExceeded, and a side thread's the service registered) after
        handing unprocessed messages back to the queue.
        """
        with self._started_lock:
            if self._started:
                raise RuntimeError("a Pipeline runs once; build a new one")
            self._started = True
        opts = self.options
        waits = self.stats.waits
        if opts.heartbeat and opts.visibility_timeout is None:
            with waits.bounded(opts.max_retry_time + opts.source_timeout):
                info = self._retry.call("read queue settings", self.source.info)
            self._hand = self._new_hand(info.visibility_timeout)  # nothing held yet
        deleter = ThreadPoolExecutor(self._delete_workers, thread_name_prefix="deleter")
        self._receivers_alive = opts.concurrency
        start = self.threads.start
        threads = [
            start(f"receiver-{i}", partial(self._watched, self._receive_loop))
            for i in range(opts.concurrency)
        ]
        if opts.heartbeat:
            threads.append(start("heartbeat", partial(self._watched, self._heartbeat_loop)))
        try:
            # On stop, the batch being collected is finished; the rest is released.
            while not self._stopping.is_set():
                with waits.bounded(opts.batch_wait_seconds + 0.2):  # idle 0.1 + the wait
                    batch = self._collect()
                if batch:
                    self._process(batch, deleter)
                elif self._receivers_idle() and self._hand.empty():
                    break
        except BaseException as exc:
            self.threads.fail(exc)
        finally:
            # Deletes in flight give up within the retry budget (the first to give up stops
            # the rest), then the threads get --shutdown-timeout; releases bound their own.
            waits.enter(opts.max_retry_time + opts.source_timeout + opts.shutdown_timeout)
            # Deletes finish first: a drain that ends normally still retries them,
            # while a stop (signal or fatal error) is already set and cuts retries short.
            deleter.shutdown(wait=True)
            self._stopping.set()
            self._join(threads)
            waits.leave()
        self.threads.raise_error()
        return self.stats

    def _join(self, threads: list[threading.Thread]) -> None:
        """Wait for the threads (bounded), then hand back whatever is still buffered."""
        deadline = time.monotonic() + self.options.shutdown_timeout
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        leftover = self._hand.leftover()
        if leftover:
            self._release(leftover)

    # -- receivers -------------------------------------------------------

    def _receive_loop(self) -> None:
        try:
            self._receive_until_done()
        finally:
            with self._alive_lock:
                self._receivers_alive -= 1
                last = self._receivers_alive == 0
            if last:
                self._hand.close()  # the writer need not wait for more

    def _receive_until_done(self) -> None:
        opts = self.options
        waits = self.stats.waits
        backoff: Backoff | None = None
        # Draining polls briefly so every receiver notices the empty queue soon.
        wait = min(opts.wait_time, 1) if opts.drain else opts.wait_time
        while not self._stopping.is_set() and not self._source_done.is_set():
            with waits.bounded(0.2):
                want = self._hand.reserve(SQS_BATCH_MAX, timeout=0.2)
            if not want:
                if self._hand.spent:
                    self._source_done.set()  # --max-messages reached
                    return
                continue
            began = time.monotonic()
            # A first poll may take the whole budget; a retry what is left of it.
            left = opts.max_retry_time if backoff is None else backoff.time_left(began)
            try:
                with waits.bounded(wait + opts.source_timeout):
                    messages = self.source.receive(want, wait, timeout=left)
            except RetryableError as exc:
                self._hand.unreserve(want)
                if self._stopping.is_set():
                    return
                backoff = self._retry.failed("receive", exc, backoff, began=began)
                delay = backoff.update_delay(time.monotonic())
                with waits.bounded(delay):
                    self._stopping.wait(delay)
                continue
            backoff = None
            self._hand.unreserve(want - len(messages))
            if messages:
                self._take(messages)
            elif opts.drain and self._queue_empty():
                self._source_done.set()

    def _queue_empty(self) -> bool:
        try:
            with self.stats.waits.bounded(self.options.source_timeout):
                return self.source.depth().visible == 0
        except RetryableError:
            return False

    def _take(self, messages: list[Message]) -> None:
        if self._stopping.is_set():
            self._hand.close()  # what comes after a stop is handed back, not buffered
        redelivered = sum(1 for m in messages if m.receive_count > 1)
        now = time.monotonic()
        if not self._hand.hold(messages, now, received=len(messages), redeliveries=redelivered):
            self._release(messages)

    # -- writer ----------------------------------------------------------

    def _collect(self) -> list[Message]:
        """Up to batch_size messages, waiting at most batch_wait_seconds after the first.

        The buffer wakes the writer for the first message, a full batch or its
        close (the last receiver ending, or a receive after a stop), not for each
        receive; a stop with a partial batch in hand shows at its deadline.
        """
        opts = self.options
        return self._hand.take(opts.batch_size, opts.batch_wait_seconds, idle=0.1)

    def _receivers_idle(self) -> bool:
        with self._alive_lock:
            return self._receivers_alive == 0

    def _split(self, messages: list[Message]) -> Batch:
        rows: list[Row] = []
        rejections: list[Rejection] = []
        masker, lake, allowed = self.masker, self.options.lake, self.options.lake_extra_fields
        dropped: list[str] = []
        for m in messages:
            out = transform(m, masker, lake=lake, extra_fields=allowed)
            if isinstance(out, Row):
                rows.append(out)
                dropped += out.lake_dropped
            else:
                rejections.append(out)
        if dropped:
            self.stats.lake_dropped(dropped)
        by_id: dict[str, Message] = {}  # built only if the sink refuses a row

        def reject_row(message_id: str, reason: str) -> Rejection:
            if not by_id:
                by_id.update((m.message_id, m) for m in messages)
            return reject(by_id[message_id], reason, masker)

        return Batch(rows, rejections, reject_row)

    def _process(self, messages: list[Message], deleter: ThreadPoolExecutor) -> None:
        started = time.monotonic()
        try:
            batch = self._split(messages)
            # Each write fails within sink_timeout, and the policy gives up after the budget;
            # a retry is given the time left, so that it ends near the give-up instant.
            with self.stats.waits.bounded(self.options.max_retry_time + self.options.sink_timeout):
                result = self._retry.call_within(
                    "write", lambda seconds: self.sink.write(batch, timeout=seconds)
                )
        except BaseException:
            self._release(messages)  # not committed: let another worker have them now
            raise
        self._hand.committed(messages)  # the heartbeat no longer needs them
        seconds = time.monotonic() - started
        self.stats.committed(result, seconds=seconds, sent_at=[m.sent_at for m in messages])
        log.info(
            "batch committed",
            extra={
                "fields": {
                    "messages": len(messages),
                    "loaded": result.loaded,
                    "rejected": result.rejected,
                    "duplicates": result.duplicates,
                    "ms": round(seconds * 1000, 1),
                }
            },
        )
        # SQS deletes 10 per call: spread the calls over the deleter threads, a few
        # tasks per batch rather than one per call (a task costs more than a call's setup).
        chunks = [messages[i : i + SQS_BATCH_MAX] for i in range(0, len(messages), SQS_BATCH_MAX)]
        tasks = min(len(chunks), self._delete_workers)
        for t in range(tasks):
            deleter.submit(self._guarded, partial(self._delete_chunks, chunks[t::tasks]))

    def _delete_chunks(self, chunks: list[list[Message]]) -> None:
        for chunk in chunks:
            self._delete(chunk)

    def _delete(self, messages: Sequence[Message]) -> None:
        """Delete committed messages; one not deleted comes back and the ledger skips it."""
        failed = [m.message_id for m in messages]
        try:
            failed = self._retry.call_within(
                "delete", lambda seconds: self.source.delete(messages, timeout=seconds)
            )
        except RetryTimeExceeded:
            if not self._stopping.is_set():
                raise  # an outage longer than --max-retry-time stops the worker
            log.warning("%d message(s) not deleted at shutdown; they will be skipped", len(failed))
        finally:
            deleted = len(messages) - len(failed)
            self._hand.let_go(messages, deleted=deleted, delete_failures=len(failed))

    def _release(self, messages: list[Message]) -> None:
        """Make messages visible again at once so another worker takes them (one attempt)."""
        released = 0
        self._hand.handing_back(messages)
        try:
            with self.stats.waits.bounded(self._calls(messages) * self.options.source_timeout):
                self.source.change_visibility(messages, 0)
            released = len(messages)
        except LoginEtlError as exc:
            log.warning("could not release %d message(s): %s", len(messages), exc)
        finally:
            self._hand.let_go(messages, released=released)

    @staticmethod
    def _calls(messages: Sequence[Message]) -> int:
        """Source calls one batch call over `messages` makes (SQS takes 10 per call)."""
        return -(-len(messages) // SQS_BATCH_MAX)

    # -- heartbeat -------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        # Fixed-rate ticks, so a slow round does not push the next one back.
        period = self._hand.leases.period
        backoff: Backoff | None = None
        next_tick = time.monotonic()
        while True:
            next_tick = max(next_tick + period, time.monotonic())
            with self.stats.waits.bounded(period):
                if self._stopping.wait(next_tick - time.monotonic()):
                    return
            try:
                now = time.monotonic()
                left = self.options.max_retry_time if backoff is None else backoff.time_left(now)
                self._extend_due(left)
                backoff = None
            except RetryableError as exc:
                if self._stopping.is_set():
                    return
                # The next tick is the retry; give up at the same moment as every stage.
                backoff = self._retry.failed("extend", exc, backoff)

    def _extend_due(self, timeout: float) -> None:
        """Extend every message held longer than a third of the visibility timeout,
        each call within `timeout` (the time left of the retry budget)."""
        now = time.monotonic()
        leases = self._hand.leases
        due = leases.due(now)
        if due:
            with self.stats.waits.bounded(self._calls(due) * self.options.source_timeout):
                failed = self.source.change_visibility(due, leases.extension, timeout=timeout)
            self.stats.add(extended=leases.extended(due, now, failed))
