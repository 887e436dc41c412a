"""health.Health: liveness and readiness decided from recorded facts and a given `now`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from login_etl.health import Health
from login_etl.liveness import Waits
from login_etl.masking import Masker
from login_etl.metrics import Stats
from login_etl.pipeline import Options, Pipeline
from login_etl.sink import Batch, MemorySink, WriteResult
from login_etl.source import MemorySource
from tests.unit.helpers import record_body


def ok() -> None:
    pass


def down() -> None:
    raise OSError("connection refused")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_thread_inside_its_bound_is_alive_however_long_it_waits() -> None:
    clock = Clock()
    waits = Waits(clock)
    health = Health(Stats(waits=waits), {}, slack=5)
    with waits.bounded(600):  # a write held by a hung database, under the retry budget
        clock.now += 604.9
        assert health.live(clock.now)
        assert not health.live(clock.now + 0.2)  # its bound and the slack have passed
        assert health.stuck(clock.now + 0.2) == [threading.current_thread().name]
    # Out of the wait, working: due at the next wait within the slack.
    assert health.live(clock.now + 5)
    assert not health.live(clock.now + 5.1)
    waits.enter(1)
    assert health.live(clock.now + 6)
    waits.leave()  # a thread done with the loop is no longer watched
    assert health.live(clock.now + 10_000)


def test_a_thread_that_died_is_stuck_at_once() -> None:
    clock = Clock()
    waits = Waits(clock)
    health = Health(Stats(waits=waits), {}, slack=5)
    finished = threading.Thread(target=lambda: (waits.enter(60), waits.leave()), name="done")
    died = threading.Thread(target=lambda: waits.enter(60), name="receiver-0")
    for t in (finished, died):
        t.start()
        t.join()
    assert health.stuck(clock.now) == ["receiver-0"]


def test_ready_needs_every_dependency_answered_recently() -> None:
    health = Health(Stats(), {"postgresql": ok, "sqs": ok}, slack=60)
    assert health.ready(0.0) == {"postgresql": False, "sqs": False}  # never probed
    health.record("postgresql", True, 10.0)
    health.record("sqs", True, 11.0)
    assert health.ready(15.0) == {"postgresql": True, "sqs": True}
    assert health.ready(15.1) == {"postgresql": False, "sqs": True}  # stale answer
    health.record("sqs", False, 12.0)
    assert health.ready(12.0) == {"postgresql": True, "sqs": False}


def test_probe_records_failures_and_hung_checks_as_down() -> None:
    release = threading.Event()

    def hung() -> None:
        release.wait(10)

    health = Health(Stats(), {"postgresql": ok, "sqs": down, "lake": hung}, slack=60)
    try:
        health.probe(timeout=0.3)
    finally:
        release.set()
    answers = health.ready(time.monotonic())
    assert answers == {"postgresql": True, "sqs": False, "lake": False}


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class HeldSink(MemorySink):
    """A sink whose writes block until released, as on a hung database."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        self.entered.set()
        self.release.wait(30)
        return super().write(batch)


def test_a_pipeline_reports_its_write_bound_and_leaves_when_done(masker: Masker) -> None:
    clock = Clock()  # frozen: every bound below is counted from 1000
    stats = Stats(waits=Waits(clock))
    sink = HeldSink()
    source = MemorySource([record_body(user_id=f"u{i}") for i in range(30)])
    options = Options(
        concurrency=2,
        batch_size=10,
        max_in_flight=30,
        heartbeat=False,
        batch_wait_seconds=0.01,
        max_retry_time=100,
        sink_timeout=50,
    )
    pipeline = Pipeline(source, sink, masker, options, stats=stats)
    writer = threading.Thread(target=pipeline.run, name="writer")
    writer.start()
    try:
        assert sink.entered.wait(10)
        # Inside the write: bounded by the retry budget plus one write's own bound.
        assert "writer" not in stats.waits.stuck(clock.now + 150, slack=0)
        assert "writer" in stats.waits.stuck(clock.now + 150.1, slack=0)
        wait_until(lambda: stats.in_hand == 30)  # the rest is buffered behind the write
        pipeline.stop()
    finally:
        sink.release.set()
        writer.join(30)
    assert len(sink.rows) == 10 and stats.released == 20  # the buffer handed back at stop
    # Every thread of a finished loop has left: none is taken for dead.
    assert stats.waits.stuck(clock.now + 10_000, slack=0) == []
