"""One contract, two implementations: the in-memory doubles must behave like
the real seams, or unit tests that use them prove nothing.

Each test here runs against `MemorySink` and `PostgresSink` (a fresh
database), or against `MemorySource` and `SqsSource` (a fresh queue on moto
over HTTP). A test that passes for one and fails for the other is a double
that has drifted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from login_etl.masking import Masker, decode_key, generate_key
from login_etl.pgsink import PostgresSink
from login_etl.postgres import init_schema
from login_etl.sink import Batch, MemorySink, Sink
from login_etl.source import MemorySource, Message, Source
from login_etl.sqs import SqsSource
from login_etl.transform import Rejection, Row, open_body, reject, transform

from .helpers import REFUSE_POISON, USER_LOGINS_DDL, event, query

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
REFUSED = "db_error:P0001"  # what PostgreSQL's own refusal of a row is called
# A database rule that refuses some rows: PostgreSQL raises from a trigger,
# MemorySink is told the same rule.


# -- sinks -----------------------------------------------------------------------


@dataclass
class SinkUnderTest:
    """A sink, and what it has stored, read back the implementation's own way."""

    sink: Sink
    loaded: Callable[[], list[str]]  # user ids, sorted
    rejected: Callable[[], dict[str, tuple[str, str]]]  # message id → (reason, sealed body)
    ledger: Callable[[], dict[str, str]]  # message id → outcome


def _memory_sink() -> Iterator[SinkUnderTest]:
    sink = MemorySink(refuse=lambda row: REFUSED if row.user_id.startswith("poison") else None)
    yield SinkUnderTest(
        sink,
        loaded=lambda: sorted(r.user_id for r in sink.rows),
        rejected=lambda: {m: (r.reason, r.sealed_body) for m, r in sink.rejections.items()},
        ledger=lambda: dict(sink.ledger),
    )


def _postgres_sink(url: str) -> Iterator[SinkUnderTest]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(USER_LOGINS_DDL + REFUSE_POISON)
        init_schema(conn)
    sink = PostgresSink(url)
    try:
        yield SinkUnderTest(
            sink,
            loaded=lambda: sorted(r[0] for r in query(url, "SELECT user_id FROM user_logins")),
            rejected=lambda: {
                r[0]: (r[1], r[2])
                for r in query(
                    url, "SELECT message_id, reason, sealed_body FROM user_logins_rejected"
                )
            },
            ledger=lambda: dict(query(url, "SELECT message_id, outcome FROM login_etl_ledger")),
        )
    finally:
        sink.close()


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[SinkUnderTest]:
    """Each sink implementation in turn, empty, refusing rows of 'poison' users."""
    if request.param == "memory":
        yield from _memory_sink()
    else:
        yield from _postgres_sink(request.getfixturevalue("database_url"))


MASKER = Masker(decode_key(generate_key()))


def message(mid: str, body: str, receipt: str = "r") -> Message:
    return Message(mid, f"{receipt}-{mid}", body, SENT)


def batch_of(messages: list[Message], *, on_refusal: Callable[[], None] | None = None) -> Batch:
    """Rows and rejections as the loop builds them; `on_refusal` runs when the
    store turns a row into a rejection (to make that step fail)."""
    by_id = {m.message_id: m for m in messages}
    rows: list[Row] = []
    rejections: list[Rejection] = []
    for m in messages:
        out = transform(m, MASKER)
        if isinstance(out, Row):
            rows.append(out)
        else:
            rejections.append(out)

    def refuse(mid: str, reason: str) -> Rejection:
        if on_refusal is not None:
            on_refusal()
        return reject(by_id[mid], reason, MASKER)

    return Batch(rows, rejections, refuse)


def good(i: int) -> Message:
    return message(f"m-{i:03d}", event(i))


def poison(i: int) -> Message:
    return message(f"m-{i:03d}", event(i, user_id=f"poison-{i}"))


def malformed(i: int) -> Message:
    return message(f"m-{i:03d}", "not json")


def test_a_batch_loads_rows_and_records_rejections(store: SinkUnderTest) -> None:
    result = store.sink.write(batch_of([good(1), good(2), malformed(3)]))
    assert (result.loaded, result.rejected, result.duplicates) == (2, 1, 0)
    assert result.reasons == {"invalid_json": 1}
    assert store.loaded() == ["user-1", "user-2"]
    (reason, sealed), *others = store.rejected().values()
    assert others == [] and reason == "invalid_json"
    assert open_body(MASKER, sealed, "m-003") == "not json"
    assert store.ledger() == {"m-001": "loaded", "m-002": "loaded", "m-003": "rejected"}


def test_a_redelivered_batch_is_skipped(store: SinkUnderTest) -> None:
    first = [good(1), good(2), malformed(3)]
    store.sink.write(batch_of(first))
    again = store.sink.write(batch_of([message(m.message_id, m.body, "r2") for m in first]))
    assert (again.loaded, again.rejected, again.duplicates, again.reasons) == (0, 0, 3, {})
    assert store.loaded() == ["user-1", "user-2"]
    assert len(store.rejected()) == 1 and len(store.ledger()) == 3


def test_a_redelivery_mixed_with_new_messages_loads_only_the_new(store: SinkUnderTest) -> None:
    store.sink.write(batch_of([good(1), malformed(2)]))
    result = store.sink.write(batch_of([good(1), malformed(2), good(3), malformed(4)]))
    assert (result.loaded, result.rejected, result.duplicates) == (1, 1, 2)
    assert store.loaded() == ["user-1", "user-3"]
    assert sorted(store.rejected()) == ["m-002", "m-004"]


def test_a_message_received_twice_in_one_batch_counts_once(store: SinkUnderTest) -> None:
    twice = [good(1), message("m-001", event(1), "r2"), malformed(2), message("m-002", "x", "r2")]
    result = store.sink.write(batch_of(twice))
    assert (result.loaded, result.rejected, result.duplicates) == (1, 1, 2)
    assert store.loaded() == ["user-1"]
    assert store.ledger() == {"m-001": "loaded", "m-002": "rejected"}


def test_a_refused_row_becomes_a_rejection_and_the_rest_loads(store: SinkUnderTest) -> None:
    messages = [good(i) for i in range(1, 40)]
    messages[17] = poison(18)
    result = store.sink.write(batch_of(messages))
    assert (result.loaded, result.rejected, result.duplicates) == (38, 1, 0)
    assert result.reasons == {REFUSED: 1}
    assert "poison-18" not in store.loaded() and len(store.loaded()) == 38
    reason, sealed = store.rejected()["m-018"]
    assert reason == REFUSED
    assert open_body(MASKER, sealed, "m-018") == poison(18).body  # sealed, replayable
    assert store.ledger()["m-018"] == "rejected"


def test_a_failed_batch_leaves_nothing_behind(store: SinkUnderTest) -> None:
    """All or nothing: a failure part-way (here, sealing a refused row's body)
    stores no row, no rejection and no ledger entry."""

    def fail() -> None:
        raise RuntimeError("sealing failed")

    messages = [good(1), good(2), poison(3), good(4), malformed(5)]
    with pytest.raises(RuntimeError, match="sealing failed"):
        store.sink.write(batch_of(messages, on_refusal=fail))
    assert (store.loaded(), store.rejected(), store.ledger()) == ([], {}, {})
    # Nothing was half-recorded: the same batch, retried, loads in full.
    result = store.sink.write(batch_of(messages))
    assert (result.loaded, result.rejected, result.duplicates) == (3, 2, 0)
    assert store.loaded() == ["user-1", "user-2", "user-4"]


# -- sources -----------------------------------------------------------------------


@dataclass
class SourceUnderTest:
    """A source, and a way to put bodies into it."""

    source: Source
    send: Callable[[list[str]], None]


@pytest.fixture(params=["memory", "sqs", "sqs-query"])
def queue(request: pytest.FixtureRequest) -> SourceUnderTest:
    """Each source implementation in turn: an empty queue, visibility timeout 30 s.

    ``sqs-query`` is `SqsSource` on a query-only endpoint (moto 4.1.8), which it
    must find out by itself.
    """
    if request.param == "memory":
        memory = MemorySource(visibility_timeout=30)

        def send_memory(bodies: list[str]) -> None:
            for body in bodies:
                memory.send(body)

        return SourceUnderTest(memory, send_memory)
    fixture = "queue_url"
    if request.param == "sqs-query":
        request.getfixturevalue("query_aws_env")  # AWS_ENDPOINT_URL names that endpoint
        fixture = "query_queue_url"
    sqs = SqsSource(request.getfixturevalue(fixture))  # made with VisibilityTimeout 30

    def send_sqs(bodies: list[str]) -> None:
        assert sqs.send_bodies(bodies) == len(bodies)

    return SourceUnderTest(sqs, send_sqs)


def receive_all(source: Source, expected: int, *, most: int = 10) -> list[Message]:
    """Receive until `expected` messages are in hand (SQS may answer with fewer)."""
    got: list[Message] = []
    deadline = time.monotonic() + 20
    while len(got) < expected and time.monotonic() < deadline:
        batch = source.receive(most, 1)
        assert len(batch) <= most
        got += batch
    assert len(got) == expected
    return got


def test_receive_hands_out_at_most_n_each_once(queue: SourceUnderTest) -> None:
    bodies = [f"body-{i}" for i in range(15)]
    before = datetime.now(UTC)
    queue.send(bodies)
    first = queue.source.receive(4, 1)
    assert 1 <= len(first) <= 4
    rest = receive_all(queue.source, 15 - len(first), most=4)
    got = first + rest
    assert sorted(m.body for m in got) == sorted(bodies)
    assert len({m.message_id for m in got}) == 15
    assert len({m.receipt for m in got}) == 15
    assert all(m.receive_count == 1 for m in got)
    for m in got:  # SentTimestamp has millisecond precision
        assert before - timedelta(seconds=1) <= m.sent_at <= datetime.now(UTC)
    # All 15 are in flight: nothing more to receive.
    assert queue.source.receive(10, 1) == []
    info = queue.source.info()
    assert (info.visible, info.in_flight, info.visibility_timeout) == (0, 15, 30)


def test_delete_removes_and_visibility_zero_hands_back(queue: SourceUnderTest) -> None:
    queue.send(["a", "b", "c", "d"])
    held = receive_all(queue.source, 4)
    by_body = {m.body: m for m in held}
    assert queue.source.delete([by_body["a"], by_body["b"]]) == []
    assert queue.source.change_visibility([by_body["c"]], 0) == []
    info = queue.source.info()
    assert (info.visible, info.in_flight) == (1, 1)  # c is back; d is still held
    (again,) = receive_all(queue.source, 1)
    assert (again.message_id, again.body, again.receive_count) == (by_body["c"].message_id, "c", 2)
    assert again.receipt != by_body["c"].receipt
    # Extending what is held keeps it hidden; deleting the rest empties the queue.
    assert queue.source.change_visibility([by_body["d"], again], 60) == []
    assert queue.source.receive(10, 1) == []
    assert queue.source.delete([by_body["d"], again]) == []
    info = queue.source.info()
    assert (info.visible, info.in_flight) == (0, 0)


# Not on moto 4.1.8: its answer to a bad receipt in a visibility batch is not well-formed XML.
@pytest.mark.parametrize("queue", ["memory", "sqs"], indirect=True)
def test_bad_receipts_are_returned_as_failed_ids(queue: SourceUnderTest) -> None:
    queue.send(["a", "b"])
    held = receive_all(queue.source, 2)
    forged = [Message(m.message_id, "not-a-receipt-" + m.message_id, m.body, SENT) for m in held]
    assert sorted(queue.source.delete(forged)) == sorted(m.message_id for m in held)
    assert sorted(queue.source.change_visibility(forged[:1], 0)) == [held[0].message_id]
    # Neither call touched the real messages: both are still held, then delete cleanly.
    assert (queue.source.info().visible, queue.source.info().in_flight) == (0, 2)
    mixed = [forged[0], held[1]]
    assert queue.source.delete(mixed) == [held[0].message_id]
    assert queue.source.delete(held[:1]) == []
    assert (queue.source.info().visible, queue.source.info().in_flight) == (0, 0)


def test_more_than_ten_at_once_are_split_into_batches(queue: SourceUnderTest) -> None:
    queue.send([f"body-{i}" for i in range(23)])
    held = receive_all(queue.source, 23)
    assert queue.source.change_visibility(held, 60) == []
    assert queue.source.delete(held) == []
    assert (queue.source.info().visible, queue.source.info().in_flight) == (0, 0)
