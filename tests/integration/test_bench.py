"""`make bench` keeps working, and its numbers are about the work they claim.

Speed is never asserted here (it is measured by `make bench`). What is
checked: the output's documented shape, and that every stage really moved
the events it divides its time by — through the in-memory loop, the
PostgreSQL sink and a full SQS drain — with the outcome an independent
oracle expects.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pytest

from login_etl.dev import bench
from login_etl.dev.local import local_aws_env
from login_etl.pgsink import PostgresSink
from login_etl.sink import MemorySink, WriteResult
from login_etl.sqs import SqsSource
from tests.oracle import outcome

EVENTS, SQS_MESSAGES, COST_MESSAGES, SINK_EVENTS = 400, 30, 40, 150


class Tally:
    """What each sink committed and how many messages SQS deletes removed."""

    def __init__(self) -> None:
        self.memory = WriteResult()
        self.postgres = WriteResult()
        self.deleted: set[str] = set()
        self.received: Counter[str] = Counter()
        self.bodies: list[list[str]] = []

    @staticmethod
    def add(total: WriteResult, result: WriteResult) -> None:
        total.loaded += result.loaded
        total.rejected += result.rejected
        total.duplicates += result.duplicates
        for reason, n in result.reasons.items():
            total.reasons[reason] = total.reasons.get(reason, 0) + n


@pytest.fixture
def tally(monkeypatch: pytest.MonkeyPatch) -> Tally:
    """Count, without changing, what the bench's stages do."""
    seen = Tally()
    memory_write, postgres_write = MemorySink.write, PostgresSink.write
    sqs_receive, sqs_delete, synthetic = SqsSource.receive, SqsSource.delete, bench.synthetic

    def count_memory(self: MemorySink, batch: Any, **kwargs: Any) -> WriteResult:
        result = memory_write(self, batch, **kwargs)
        seen.add(seen.memory, result)
        return result

    def count_postgres(self: PostgresSink, batch: Any, **kwargs: Any) -> WriteResult:
        result = postgres_write(self, batch, **kwargs)
        seen.add(seen.postgres, result)
        return result

    def count_receives(self: SqsSource, *args: Any, **kwargs: Any) -> list[Any]:
        messages = sqs_receive(self, *args, **kwargs)
        seen.received.update(m.message_id for m in messages)
        return messages

    def count_deletes(self: SqsSource, messages: Any, **kwargs: Any) -> list[str]:
        failed = sqs_delete(self, messages, **kwargs)
        seen.deleted |= {m.message_id for m in messages} - set(failed)
        return failed

    def record(*args: Any, **kwargs: Any) -> list[str]:
        bodies = synthetic(*args, **kwargs)
        seen.bodies.append(bodies)
        return bodies

    monkeypatch.setattr(MemorySink, "write", count_memory)
    monkeypatch.setattr(PostgresSink, "write", count_postgres)
    monkeypatch.setattr(SqsSource, "receive", count_receives)
    monkeypatch.setattr(SqsSource, "delete", count_deletes)
    monkeypatch.setattr(bench, "synthetic", record)
    for name in local_aws_env("http://unused"):  # the bench points AWS_* at its own moto
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return seen


@pytest.mark.timeout(150)
def test_bench_moves_every_event_it_reports_on(
    tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    bench.main(
        [
            *("--events", str(EVENTS), "--sqs-messages", str(SQS_MESSAGES)),
            *("--cost-messages", str(COST_MESSAGES), "--sink-events", str(SINK_EVENTS)),
            "--json",
        ]
    )
    out = capsys.readouterr().out
    results = json.loads(out.strip().splitlines()[-1])  # one JSON object, the last line
    stages = ("transform", "pipeline", "postgres", "sqs", "drain_lake", "backfill")
    stages += ("sink_vs_own_sql", "sink_vs_floor")
    assert set(stages) | {"e2e_cpu_per_msg", "startup_cpu_s"} == set(results)
    # CPU slopes from a few dozen messages are noise, of either sign: only their shape here.
    for name, key in [("startup_cpu_s", "help"), ("startup_cpu_s", "run")] + [
        ("e2e_cpu_per_msg", key) for key in ("ours", "limit", "ratio")
    ]:
        value = results[name][key]
        assert isinstance(value, float) and math.isfinite(value), (name, key)
    for name in stages:
        for key in ("ours", "limit", "ratio"):
            value = results[name][key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, key)

    # The events of the in-process stages and the messages of the SQS stage.
    events, messages = tally.bodies
    assert (len(events), len(messages)) == (EVENTS, SQS_MESSAGES)
    valid, reasons = outcome(events)
    sqs_valid, sqs_reasons = outcome(messages)
    assert reasons, "the generator mixes in malformed messages"
    # pipeline: every event through the threaded loop into the in-memory sink, once
    assert (tally.memory.loaded, tally.memory.rejected, tally.memory.duplicates) == (
        len(valid),
        sum(reasons.values()),
        0,
    )
    assert tally.memory.reasons == dict(reasons)
    # postgres: every valid event's row through the real sink; sqs: a full drain
    # into PostgreSQL, each message received, committed and deleted once; the lake
    # stage: two more drains of the same events into PostgreSQL (lake off, lake on);
    # the sink's cost figure: the first SINK_EVENTS events' rows through the real sink
    sink_valid, _ = outcome(events[:SINK_EVENTS])
    assert (tally.postgres.loaded, tally.postgres.rejected) == (
        3 * len(valid) + len(sqs_valid) + len(sink_valid),
        sum(sqs_reasons.values()) + 2 * sum(reasons.values()),
    )
    # SQS is at-least-once (moto too can hand one message to two concurrent receives):
    # a second copy must be skipped by the ledger, never loaded or rejected again, so
    # the sink may report a duplicate only for a message that was received twice.
    redelivered = sum(n - 1 for n in tally.received.values())
    assert 0 <= tally.postgres.duplicates <= redelivered, tally.received.most_common(3)
    assert len(tally.deleted) == SQS_MESSAGES
