"""pipeline.Pipeline with the in-memory source and sink: delivery guarantees and control."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from login_etl.dev.seed import synthetic
from login_etl.errors import RetryTimeExceeded, SinkUnavailable, SourceUnavailable
from login_etl.events import Invalid, LoginEvent, parse_event
from login_etl.masking import Masker
from login_etl.metrics import Stats
from login_etl.pipeline import Options, Pipeline
from login_etl.sink import Batch, MemorySink, WriteResult
from login_etl.source import MemorySource, Message
from login_etl.transform import Rejection, Row, open_body, reject, transform
from tests.unit.helpers import KEY_A, record_body

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def options(**changes: Any) -> Options:
    """Fast options for in-memory runs: short waits, drain, no heartbeat."""
    base = Options(
        concurrency=2,
        batch_size=10,
        batch_wait_seconds=0.05,
        wait_time=0,
        max_in_flight=100,
        drain=True,
        max_retry_time=10.0,
        shutdown_timeout=5.0,
        heartbeat=False,
    )
    return replace(base, **changes)


def fill(source: MemorySource, bodies: Sequence[str]) -> dict[str, str]:
    """Send `bodies`; return message id → body."""
    return {source.send(b, sent_at=SENT): b for b in bodies}


class PollingSource(MemorySource):
    """A MemorySource whose empty receive waits a little, like a (short) long poll."""

    def receive(
        self, max_messages: int, wait_seconds: int, *, timeout: float | None = None
    ) -> list[Message]:
        out = super().receive(max_messages, wait_seconds)
        if not out:
            time.sleep(0.01)
        return out


class Runner:
    """Runs a pipeline in a thread; `join` returns its stats or re-raises its error."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.error: BaseException | None = None
        self.stats: Stats | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.stats = self.pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def join(self, timeout: float = 10.0) -> Stats:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "pipeline did not return"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def assert_queue_empty(source: MemorySource) -> None:
    info = source.info()
    assert (info.visible, info.in_flight) == (0, 0)


# -- every message ends once ------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "batch_size"), [(1, 1), (1, 10), (3, 7), (4, 500)], ids=str
)
def test_every_message_ends_as_one_row_or_rejection(
    masker: Masker, concurrency: int, batch_size: int
) -> None:
    source = MemorySource()
    bodies = fill(source, synthetic(150, seed=concurrency * batch_size, malformed_rate=0.1))
    sink = MemorySink()
    stats = Pipeline(
        source, sink, masker, options(concurrency=concurrency, batch_size=batch_size)
    ).run()

    row_ids = [r.message_id for r in sink.rows]
    assert len(row_ids) == len(set(row_ids))
    assert set(row_ids).isdisjoint(sink.rejections)
    assert set(row_ids) | set(sink.rejections) == set(bodies)
    for row in sink.rows:
        event = parse_event(bodies[row.message_id], SENT)
        assert isinstance(event, LoginEvent)
        assert masker.unmask("ip", row.masked_ip) == event.ip
        assert masker.unmask("device_id", row.masked_device_id) == event.device_id
        assert (row.user_id, row.app_version, row.locale) == (
            event.user_id,
            event.app_version,
            event.locale,
        )
    for mid, rejection in sink.rejections.items():
        assert isinstance(parse_event(bodies[mid], SENT), Invalid)
        assert open_body(masker, rejection.sealed_body, rejection.message_id) == bodies[mid]

    invalid = sum(isinstance(parse_event(b, SENT), Invalid) for b in bodies.values())
    assert invalid > 0
    assert (stats.received, stats.deleted) == (150, 150)
    assert (stats.loaded, stats.rejected, stats.duplicates) == (150 - invalid, invalid, 0)
    assert sum(stats.reasons.values()) == invalid
    assert stats.redeliveries == 0  # every message was received once
    assert stats.in_hand == 0
    assert source.deleted == set(bodies)
    assert_queue_empty(source)


def test_memory_sink_skips_a_batch_written_twice(masker: Masker) -> None:
    messages = [Message(f"m-{i}", f"r-{i}", record_body(user_id=f"u{i}"), SENT) for i in range(5)]
    messages.append(Message("m-bad", "r-bad", "not json", SENT))
    outs = [transform(m, masker) for m in messages]
    by_id = {m.message_id: m for m in messages}
    batch = Batch(
        [o for o in outs if isinstance(o, Row)],
        [o for o in outs if isinstance(o, Rejection)],
        lambda mid, reason: reject(by_id[mid], reason, masker),
    )
    sink = MemorySink()
    first = sink.write(batch)
    assert (first.loaded, first.rejected, first.duplicates) == (5, 1, 0)
    assert first.reasons == {"invalid_json": 1}
    second = sink.write(batch)
    assert (second.loaded, second.rejected, second.duplicates) == (0, 0, 6)
    assert len(sink.rows) == 5 and len(sink.rejections) == 1


def test_redelivered_message_is_loaded_once(masker: Masker) -> None:
    """Messages expire while their batch is written; their copies are skipped by the ledger."""
    now = [0.0]
    source = PollingSource(visibility_timeout=30, clock=lambda: now[0])
    bodies = fill(source, [record_body(user_id=f"u{i}") for i in range(10)])
    sink = MemorySink()
    stats = Stats()
    writes = [0]

    class ExpiringSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            writes[0] += 1
            if writes[0] == 1:
                assert source.info().in_flight == 10
                now[0] += 31  # every message in flight passes its visibility timeout
                wait_until(lambda: stats.received == 20)  # ... and is received again
            return sink.write(batch)

        def close(self) -> None:
            pass

    Pipeline(
        source,
        ExpiringSink(),
        masker,
        options(concurrency=1, batch_size=10, batch_wait_seconds=0.2, drain=False, max_messages=20),
        stats=stats,
    ).run()
    assert sorted(r.message_id for r in sink.rows) == sorted(bodies)
    assert (stats.received, stats.loaded, stats.duplicates) == (20, 10, 10)
    assert stats.redeliveries == 10  # the second receive of each
    assert stats.delete_failures == 10  # the first receipts had expired
    assert source.deleted == set(bodies)
    assert_queue_empty(source)


# -- limits and draining ------------------------------------------------------------


def test_max_messages_stops_after_n(masker: Masker) -> None:
    source = PollingSource()
    fill(source, [record_body(user_id=f"u{i}") for i in range(50)])
    sink = MemorySink()
    stats = Pipeline(
        source, sink, masker, options(drain=False, max_messages=23, batch_size=5)
    ).run()
    assert (stats.received, stats.loaded, stats.deleted) == (23, 23, 23)
    assert len(sink.rows) == len(source.deleted) == 23
    info = source.info()
    assert (info.visible, info.in_flight) == (27, 0)


def test_max_messages_larger_than_queue_with_drain(masker: Masker) -> None:
    source = MemorySource([record_body()] * 5, sent_at=SENT)
    stats = Pipeline(source, MemorySink(), masker, options(max_messages=100)).run()
    assert stats.loaded == 5
    assert_queue_empty(source)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_drain_exits_when_empty(masker: Masker, concurrency: int) -> None:
    source = MemorySource()
    stats = Pipeline(source, MemorySink(), masker, options(concurrency=concurrency)).run()
    assert (stats.received, stats.loaded, stats.batches) == (0, 0, 0)
    assert 1 <= source.receives <= concurrency  # each receiver stops at its first empty receive


def test_max_in_flight_bounds_what_is_held(masker: Masker) -> None:
    limit = 10
    source = MemorySource([record_body()] * 120, sent_at=SENT)
    stats = Stats()
    sink = MemorySink()
    seen: list[tuple[int, int]] = []

    class WatchingSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            seen.append((source.info().in_flight, stats.in_hand))
            time.sleep(0.005)
            return sink.write(batch)

        def close(self) -> None:
            pass

    Pipeline(
        source,
        WatchingSink(),
        masker,
        options(concurrency=3, batch_size=5, max_in_flight=limit),
        stats=stats,
    ).run()
    assert len(sink.rows) == 120
    assert seen and max(s[0] for s in seen) <= limit
    assert max(s[1] for s in seen) <= limit
    assert max(s[0] for s in seen) >= 5  # the bound was actually reached, not idle


# -- the sink and commits -------------------------------------------------------------


def test_refused_row_becomes_db_error_rejection(masker: Masker) -> None:
    source = MemorySource()
    bodies = fill(source, [record_body(user_id=f"u{i}") for i in range(8)])
    bad_id = next(mid for mid, b in bodies.items() if '"u3"' in b)
    sink = MemorySink(refuse=lambda row: "db_error:22001" if row.user_id == "u3" else None)
    stats = Pipeline(source, sink, masker, options(batch_size=8, concurrency=1)).run()
    assert sorted(r.user_id for r in sink.rows) == [f"u{i}" for i in range(8) if i != 3]
    assert list(sink.rejections) == [bad_id]
    rejection = sink.rejections[bad_id]
    assert rejection.reason == "db_error:22001"
    assert open_body(masker, rejection.sealed_body, rejection.message_id) == bodies[bad_id]
    assert (stats.loaded, stats.rejected) == (7, 1)
    assert stats.reasons == {"db_error:22001": 1}
    assert source.deleted == set(bodies)


class FlakySink:
    """Raises SinkUnavailable `failures` times, then writes to a MemorySink."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.inner = MemorySink()

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise SinkUnavailable("database restarting")
        return self.inner.write(batch)

    def close(self) -> None:
        pass


def test_sink_outage_is_retried(masker: Masker) -> None:
    source = MemorySource([record_body(user_id=f"u{i}") for i in range(12)], sent_at=SENT)
    sink = FlakySink(failures=2)
    stats = Pipeline(source, sink, masker, options(batch_size=50, concurrency=1)).run()
    assert stats.retries_by_stage == {"write": 2}
    assert sink.calls >= 3
    assert len(sink.inner.rows) == 12 == stats.loaded == stats.deleted
    assert stats.duplicates == 0
    assert_queue_empty(source)


def test_sink_outage_past_max_retry_time(masker: Masker) -> None:
    source = MemorySource([record_body()] * 6, sent_at=SENT)
    sink = FlakySink(failures=10**9)
    started = time.monotonic()
    with pytest.raises(RetryTimeExceeded, match="gave up after 1s"):
        Pipeline(source, sink, masker, options(max_retry_time=1.0, concurrency=1)).run()
    assert time.monotonic() - started >= 1.0  # it did retry for --max-retry-time
    assert sink.calls >= 2
    assert source.deleted == set()
    assert sink.inner.rows == []
    info = source.info()
    assert info.visible + info.in_flight == 6  # nothing lost


def test_failed_batch_is_handed_back_at_once(masker: Masker) -> None:
    source = MemorySource([record_body()] * 6, sent_at=SENT, visibility_timeout=300)
    with pytest.raises(RetryTimeExceeded):
        Pipeline(
            source, FlakySink(failures=10**9), masker, options(max_retry_time=1.0, concurrency=1)
        ).run()
    assert source.info().visible == 6


def test_stop_during_sink_outage_returns_within_shutdown_timeout(masker: Masker) -> None:
    source = MemorySource([record_body()] * 5, sent_at=SENT)
    sink = FlakySink(failures=10**9)
    # Retrying would go on for ten minutes: returning at all means stop() cut it short.
    pipeline = Pipeline(
        source, sink, masker, options(concurrency=1, max_retry_time=600.0, shutdown_timeout=1.0)
    )
    runner = Runner(pipeline)
    wait_until(lambda: sink.calls >= 1)
    pipeline.stop()
    with pytest.raises(RetryTimeExceeded):
        runner.join(60)
    assert source.deleted == set()


class FlakySource(PollingSource):
    """Raises SourceUnavailable on the first `failures` receives."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.timeouts: list[float | None] = []

    def receive(
        self, max_messages: int, wait_seconds: int, *, timeout: float | None = None
    ) -> list[Message]:
        self.timeouts.append(timeout)
        if self.failures > 0:
            self.failures -= 1
            raise SourceUnavailable("throttled")
        return super().receive(max_messages, wait_seconds)


def test_source_outage_is_retried(masker: Masker) -> None:
    source = FlakySource([record_body()] * 7, sent_at=SENT, failures=2)
    stats = Pipeline(source, MemorySink(), masker, options(concurrency=1)).run()
    assert stats.retries_by_stage == {"receive": 2}
    assert stats.loaded == 7
    assert_queue_empty(source)


def test_each_retried_call_is_given_the_time_left_of_the_budget(masker: Masker) -> None:
    """A first receive, write or delete may take the whole budget; a retry, what is left
    of it (so that a hung retry ends near the give-up instant, not at its own timeout)."""
    receives = FlakySource([record_body(user_id=f"u{i}") for i in range(10)], failures=2)
    deletes = FlakyDeletes([record_body(user_id=f"u{i}") for i in range(10)], failures=2)
    writes: list[float | None] = []

    class FlakySink(MemorySink):
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            writes.append(timeout)
            if len(writes) <= 2:
                raise SinkUnavailable("connection timeout expired")
            return super().write(batch)

    opts = options(batch_size=10, concurrency=1, max_retry_time=60.0)
    Pipeline(receives, MemorySink(), masker, opts).run()
    Pipeline(deletes, FlakySink(), masker, opts).run()
    for given in (receives.timeouts[:3], deletes.timeouts[:3], writes[:3]):
        first, *retries = given
        assert first == 60.0, given
        assert all(t is not None and 50 < t < 60 for t in retries), given
        assert retries == sorted(retries, reverse=True), given  # the budget runs down


def test_source_outage_past_max_retry_time(masker: Masker) -> None:
    source = FlakySource([record_body()] * 3, sent_at=SENT, failures=10**9)
    with pytest.raises(RetryTimeExceeded):
        Pipeline(source, MemorySink(), masker, options(concurrency=1, max_retry_time=1.0)).run()
    assert source.deleted == set()


class CheckedSource(MemorySource):
    """Records, at each delete, whether the deleted ids were already committed to `sink`."""

    def __init__(self, sink: MemorySink) -> None:
        super().__init__()
        self.sink = sink
        self.problems: list[str] = []

    def delete(self, messages: Sequence[Message], *, timeout: float | None = None) -> list[str]:
        ids = {m.message_id for m in messages}
        if not ids <= set(self.sink.ledger):
            self.problems.append(f"deleted before commit: {sorted(ids - set(self.sink.ledger))}")
        return super().delete(messages)


def test_messages_are_deleted_only_after_commit(masker: Masker) -> None:
    sink = MemorySink()
    source = CheckedSource(sink)
    bodies = fill(source, synthetic(60, seed=4))
    stats = Pipeline(source, sink, masker, options(batch_size=7)).run()
    assert source.problems == []
    assert stats.deleted == 60
    assert source.deleted == set(bodies)


class CrashAfterCommit:
    """Commits each batch to `inner`, then dies as a worker killed before its deletes would."""

    def __init__(self, inner: MemorySink) -> None:
        self.inner = inner

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        self.inner.write(batch)
        raise RuntimeError("worker killed after commit")

    def close(self) -> None:
        pass


def test_crash_between_commit_and_delete_does_not_double_load(masker: Masker) -> None:
    now = [0.0]
    source = MemorySource(clock=lambda: now[0])
    bodies = fill(source, [record_body(user_id=f"u{i}") for i in range(10)])
    sink = MemorySink()
    opts = options(batch_size=10, concurrency=1)
    with pytest.raises(RuntimeError, match="killed"):
        Pipeline(source, CrashAfterCommit(sink), masker, opts).run()
    assert len(sink.rows) == 10 and source.deleted == set()
    now[0] += 31  # every message is visible again, as after a crash and a visibility timeout
    stats = Pipeline(source, sink, masker, opts).run()
    assert (stats.received, stats.loaded, stats.duplicates) == (10, 0, 10)
    assert len(sink.rows) == 10
    assert source.deleted == set(bodies)
    assert_queue_empty(source)


def test_a_pipeline_runs_once(masker: Masker) -> None:
    source = MemorySource([record_body()], sent_at=SENT)
    pipeline = Pipeline(source, MemorySink(), masker, options())
    assert pipeline.run().loaded == 1
    with pytest.raises(RuntimeError, match="runs once"):
        pipeline.run()


class FlakyDeletes(MemorySource):
    """delete() raises SourceUnavailable `failures` times in all, then works."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.delete_calls = 0
        self.timeouts: list[float | None] = []

    def delete(self, messages: Sequence[Message], *, timeout: float | None = None) -> list[str]:
        self.delete_calls += 1
        self.timeouts.append(timeout)
        if self.failures > 0:
            self.failures -= 1
            raise SourceUnavailable("delete timed out")
        return super().delete(messages)


def test_failed_deletes_are_retried_until_they_succeed(masker: Masker) -> None:
    source = FlakyDeletes([record_body(user_id=f"u{i}") for i in range(10)], failures=2)
    stats = Pipeline(source, MemorySink(), masker, options(batch_size=10, concurrency=1)).run()
    assert source.delete_calls == 3  # one chunk of 10: two failures, then success
    assert stats.retries_by_stage == {"delete": 2}
    assert (stats.deleted, stats.delete_failures) == (10, 0)
    assert_queue_empty(source)


def test_deletes_failing_past_max_retry_time_stop_the_worker(masker: Masker) -> None:
    source = FlakyDeletes([record_body(user_id=f"u{i}") for i in range(10)], failures=10**9)
    sink = MemorySink()
    opts = options(batch_size=10, concurrency=1, max_retry_time=1.0)
    with pytest.raises(RetryTimeExceeded, match="delete: gave up after 1s"):
        Pipeline(source, sink, masker, opts).run()
    assert len(sink.rows) == 10  # committed; the redelivery will be skipped by the ledger
    assert source.deleted == set()


# -- stop and heartbeat ---------------------------------------------------------------


def test_stop_releases_buffered_messages(masker: Masker) -> None:
    source = PollingSource()
    fill(source, [record_body(user_id=f"u{i}") for i in range(50)])
    sink = MemorySink()
    writing, gate = threading.Event(), threading.Event()

    class GatedSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            writing.set()
            assert gate.wait(10)
            return sink.write(batch)

        def close(self) -> None:
            pass

    # run() would wait ten minutes for a thread that ignored stop().
    opts = options(concurrency=1, batch_size=5, drain=False, shutdown_timeout=600.0)
    pipeline = Pipeline(source, GatedSink(), masker, opts)
    runner = Runner(pipeline)
    assert writing.wait(5)
    wait_until(lambda: source.info().visible == 0)  # everything received: 5 writing, 45 buffered
    pipeline.stop()
    gate.set()
    stats = runner.join(30)
    assert len(sink.rows) == 5  # the batch in hand is finished
    assert stats.released == 45
    assert stats.in_hand == 0
    info = source.info()
    assert (info.visible, info.in_flight) == (45, 0)
    again = source.receive(50, 0)
    assert len(again) == 45 and all(m.receive_count == 2 for m in again)


class LeaseAtRelease(MemorySource):
    """On each release (visibility 0), records which of its messages a heartbeat
    tick could still extend at that moment."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline: Pipeline | None = None
        self.leased_at_release: list[int] = []

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        if seconds == 0 and self.pipeline is not None:
            leased = {m.receipt for m in self.pipeline._hand.leases.due(float("inf"))}
            self.leased_at_release.append(sum(m.receipt in leased for m in messages))
        return super().change_visibility(messages, seconds)


def test_a_released_message_is_no_longer_extended(masker: Masker) -> None:
    # A heartbeat tick between the release and the drop of the lease would hide
    # again (for a whole visibility timeout) what was just handed back.
    source = LeaseAtRelease(visibility_timeout=300)
    fill(source, [record_body(user_id=f"u{i}") for i in range(8)])
    pipeline = Pipeline(
        source, MemorySink(), BrokenMasker(KEY_A), options(concurrency=1, batch_size=8)
    )
    source.pipeline = pipeline
    with pytest.raises(RuntimeError, match="a bug"):
        pipeline.run()
    assert source.leased_at_release == [0]
    assert pipeline.stats.released == 8


def test_stop_while_idle_returns_promptly(masker: Masker) -> None:
    # The heartbeat's period is ten minutes, and run() waits as long for its threads:
    # returning at all means stop() woke every one of them.
    source = PollingSource(visibility_timeout=3600)
    opts = options(drain=False, heartbeat=True, shutdown_timeout=600.0)
    pipeline = Pipeline(source, MemorySink(), masker, opts)
    runner = Runner(pipeline)
    wait_until(lambda: source.receives > 3)
    pipeline.stop()
    stats = runner.join(60)
    assert stats.received == 0


class ExtensionLog(PollingSource):
    """Records the message ids of every extension (change_visibility to a nonzero timeout)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extended_ids: list[set[str]] = []

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        if seconds:
            self.extended_ids.append({m.message_id for m in messages})
        return super().change_visibility(messages, seconds)

    def extended_since(self, call: int) -> set[str]:
        return set().union(*self.extended_ids[call:])


def _slow_run(masker: Masker, heartbeat: bool) -> tuple[Stats, MemorySource, list[int]]:
    """20 messages, visibility 1 s on the source's clock, batches of 10 whose first two
    writes last 1.6 s of that clock: twice 0.8 s, each after the heartbeat (if on)
    extended every message still held."""
    now = [0.0]
    source = ExtensionLog(visibility_timeout=1, clock=lambda: now[0])
    bodies = fill(source, [record_body(user_id=f"u{i}") for i in range(20)])
    sink = MemorySink()
    visible_after_write: list[int] = []

    class SlowSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            if len(visible_after_write) == 2:  # redeliveries of the control run: no delay
                return sink.write(batch)
            for _ in range(2):
                if heartbeat:
                    held = set(bodies) - set(sink.ledger)
                    call = len(source.extended_ids)
                    wait_until(lambda c=call, h=held: source.extended_since(c) >= h)
                now[0] += 0.8
            visible_after_write.append(source.info().visible)
            return sink.write(batch)

        def close(self) -> None:
            pass

    pipeline = Pipeline(
        source,
        SlowSink(),
        masker,
        options(concurrency=1, batch_size=10, drain=False, heartbeat=heartbeat),
    )
    runner = Runner(pipeline)
    wait_until(lambda: source.deleted == set(bodies) and source.info().in_flight == 0, 30)
    pipeline.stop()
    stats = runner.join(30)
    assert sorted(r.message_id for r in sink.rows) == sorted(bodies)
    return stats, source, visible_after_write


def test_heartbeat_extends_visibility_of_slow_batches(masker: Masker) -> None:
    stats, source, visible_after_write = _slow_run(masker, heartbeat=True)
    assert stats.extended > 0
    assert visible_after_write == [0, 0]  # nothing expired while held
    assert (stats.received, stats.duplicates, stats.delete_failures) == (20, 0, 0)
    assert_queue_empty(source)


def test_without_heartbeat_slow_batches_are_redelivered(masker: Masker) -> None:
    """Control for the test above: the same run without heartbeat does see expiry."""
    stats, source, visible_after_write = _slow_run(masker, heartbeat=False)
    assert stats.extended == 0
    assert stats.received > 20
    assert stats.duplicates > 0
    assert_queue_empty(source)


def test_heartbeat_stops_extending_a_message_once_committed(masker: Masker) -> None:
    # Two messages from one receive, one per batch: while the second batch is held,
    # the heartbeat extends it, and never the first, committed already. The source's
    # clock stands still, so nothing expires however slow the machine.
    source = ExtensionLog(visibility_timeout=1, clock=lambda: 0.0)
    first, second = fill(source, [record_body(user_id="u1"), record_body(user_id="u2")])
    sink = MemorySink()
    during_second: list[set[str]] = []

    class HoldSecondSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            if sink.ledger:  # the second batch: the first committed, its lease dropped
                call = len(source.extended_ids)
                wait_until(lambda: sum(second in ids for ids in source.extended_ids[call:]) >= 2)
                during_second.extend(source.extended_ids[call:])
            return sink.write(batch)

        def close(self) -> None:
            pass

    opts = options(concurrency=1, batch_size=1, heartbeat=True, visibility_timeout=1)
    stats = Pipeline(source, HoldSecondSink(), masker, opts).run()
    assert [r.message_id for r in sink.rows] == [first, second]
    assert len(during_second) >= 2
    assert all(first not in ids for ids in during_second)
    assert stats.extended >= 2 and stats.in_hand == 0


class RecordingSource(PollingSource):
    """Records every change_visibility call; fails the first `failures` extensions."""

    def __init__(self, *args: Any, failures: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[int, int]] = []  # (messages, seconds)
        self.failures = failures

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        self.calls.append((len(messages), seconds))
        if seconds and self.failures > 0:
            self.failures -= 1
            raise SourceUnavailable("extend timed out")
        return super().change_visibility(messages, seconds)


@pytest.mark.parametrize("failures", [0, 1])
def test_heartbeat_extends_to_a_full_timeout_and_retries_failed_extensions(
    masker: Masker, failures: int
) -> None:
    source = RecordingSource(visibility_timeout=2, failures=failures)
    bodies = fill(source, [record_body(user_id=f"u{i}") for i in range(5)])
    sink = MemorySink()
    held = threading.Event()

    class HoldingSink:
        def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
            assert held.wait(10)
            return sink.write(batch)

        def close(self) -> None:
            pass

    pipeline = Pipeline(
        source, HoldingSink(), masker, options(concurrency=1, batch_size=5, heartbeat=True)
    )
    runner = Runner(pipeline)
    wait_until(lambda: sum(1 for _, s in source.calls if s) >= failures + 2)
    held.set()
    stats = runner.join(10)
    extensions = [(n, s) for n, s in source.calls if s]
    assert all(s == 2 for _, s in extensions)  # back to a full visibility timeout
    assert all(n == 5 for n, _ in extensions)  # the whole held batch each time
    assert stats.retries_by_stage.get("extend", 0) == failures
    assert stats.extended == 5 * (len(extensions) - failures)
    assert (stats.loaded, stats.duplicates) == (5, 0)
    assert source.deleted == set(bodies)


class BrokenMasker(Masker):
    """A masker with a bug: every mask raises."""

    def mask(self, field: str, value: str) -> str:
        raise RuntimeError("a bug")


def test_a_transform_that_raises_hands_the_batch_back() -> None:
    # A bug in the transform stops the worker, but the batch it was on goes back
    # to the queue at once, like one whose write failed.
    source = MemorySource(visibility_timeout=300)
    fill(source, [record_body(user_id=f"u{i}") for i in range(8)])
    pipeline = Pipeline(
        source, MemorySink(), BrokenMasker(KEY_A), options(concurrency=1, batch_size=8)
    )
    with pytest.raises(RuntimeError, match="a bug"):
        pipeline.run()
    info = source.info()
    assert (info.visible, info.in_flight) == (8, 0)
    assert pipeline.stats.released == 8 and pipeline.stats.in_hand == 0
