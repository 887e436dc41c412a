"""leases: which held messages are due for a visibility extension, given `now`; and
`Hand`, whose one release gives back a message's slot, lease and count together."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from login_etl import leases
from login_etl.leases import Buffer, Hand, Leases
from login_etl.metrics import Stats
from login_etl.source import Message

SENT = datetime(2024, 5, 1, tzinfo=UTC)


def msg(n: int) -> Message:
    return Message(f"m{n}", f"r{n}", "{}", SENT)


def test_ticks_six_times_per_timeout_and_extends_to_a_full_timeout() -> None:
    leases = Leases(30)
    assert leases.period == 5.0
    assert leases.extension == 30
    assert Leases(1).period == 0.2  # floor: never a busy loop


def test_messages_fall_due_after_a_third_of_the_timeout() -> None:
    leases = Leases(30)
    leases.add([msg(1), msg(2)], now=100.0)
    leases.add([msg(3)], now=105.0)
    assert leases.due(109.99) == []
    assert [m.message_id for m in leases.due(110.0)] == ["m1", "m2"]
    assert [m.message_id for m in leases.due(115.0)] == ["m1", "m2", "m3"]


def test_an_extension_restarts_the_clock_except_for_failed_ids() -> None:
    leases = Leases(30)
    leases.add([msg(1), msg(2)], now=0.0)
    due = leases.due(10.0)
    assert leases.extended(due, 10.0, failed=["m2"]) == 1
    assert [m.message_id for m in leases.due(15.0)] == ["m2"]
    assert [m.message_id for m in leases.due(20.0)] == ["m1", "m2"]


def test_dropped_messages_are_never_due_nor_extended() -> None:
    leases = Leases(30)
    leases.add([msg(1), msg(2)], now=0.0)
    due = leases.due(10.0)
    leases.drop([msg(1)])  # committed while the extension call was in flight
    assert leases.extended(due, 10.0, failed=[]) == 1
    assert len(leases) == 1
    assert [m.message_id for m in leases.due(100.0)] == ["m2"]


@pytest.mark.parametrize("timeout", [3, 30, 43_200])
@pytest.mark.parametrize("received_at", [0.0, 0.01, 0.5])
def test_a_message_is_extended_well_before_it_expires(timeout: int, received_at: float) -> None:
    """Ticks every `period` from 0: the first tick that finds the message due comes at
    most half a timeout after it was received, long before it expires."""
    leases = Leases(timeout)
    leases.add([msg(1)], now=received_at * leases.period)
    tick = 0.0
    while not leases.due(tick):
        tick += leases.period
        assert tick < timeout, "never due before it expired"
    assert tick - received_at * leases.period <= timeout / 2 + 0.2


def test_the_buffer_hands_over_up_to_the_wanted_count_in_order() -> None:
    buffer = Buffer()
    assert buffer.empty() and buffer.take(10, wait=0, idle=0) == []
    buffer.put([msg(1), msg(2)], now=0.0)
    buffer.put([msg(3), msg(4)], now=0.0)
    assert not buffer.empty()
    assert buffer.take(3, wait=0, idle=0) == [msg(1), msg(2), msg(3)]
    assert buffer.take(3, wait=0, idle=0) == [msg(4)]  # the rest stayed buffered
    assert buffer.empty() and buffer.take(3, wait=0, idle=0) == []


class CountingCondition(threading.Condition):
    """A condition that counts its notifications: each is a wake-up of the writer."""

    notified = 0

    def notify(self, n: int = 1) -> None:
        CountingCondition.notified += 1
        super().notify(n)


def test_only_the_first_message_and_a_full_batch_wake_the_writer(monkeypatch) -> None:
    with monkeypatch.context() as patch:  # only the buffer's condition counts
        patch.setattr(CountingCondition, "notified", 0)
        patch.setattr(leases.threading, "Condition", CountingCondition)
        buffer = Buffer()
    taken: list = []
    thread = threading.Thread(target=lambda: taken.extend(buffer.take(50, wait=30, idle=30)))
    thread.start()
    for i in range(10):  # ten receives of five: the tenth fills the batch
        buffer.put([msg(5 * i + j) for j in range(5)], now=time.monotonic())
    thread.join(30)
    assert taken == [msg(i) for i in range(50)]  # woken by the full batch, not by its deadline
    notified = CountingCondition.notified
    assert notified <= 2, notified  # the first put and the tenth, not all ten


def test_a_partial_batch_goes_when_its_wait_after_the_first_message_is_over() -> None:
    buffer = Buffer()
    threading.Timer(0.1, lambda: buffer.put([msg(7)], now=time.monotonic())).start()
    started = time.monotonic()
    assert buffer.take(50, wait=0.5, idle=30) == [msg(7)]
    took = time.monotonic() - started
    assert 0.5 <= took < 20  # woken by the first put, then held for the wait


def test_closing_wakes_a_waiting_take_and_later_takes_never_wait() -> None:
    buffer = Buffer()
    threading.Timer(0.2, buffer.close).start()  # after the take waits
    started = time.monotonic()
    assert buffer.take(10, wait=30, idle=30) == []
    assert time.monotonic() - started < 20  # woken by close, not by the timeout
    started = time.monotonic()
    assert buffer.take(10, wait=30, idle=30) == []
    assert time.monotonic() - started < 20


def test_closing_ends_the_wait_for_a_full_batch() -> None:
    buffer = Buffer()
    buffer.put([msg(1)], now=time.monotonic())
    threading.Timer(0.2, buffer.close).start()
    started = time.monotonic()
    assert buffer.take(10, wait=30, idle=30) == [msg(1)]
    assert time.monotonic() - started < 20


def test_the_source_side_imports_no_masking() -> None:
    # Receiving and holding messages needs no key: the seam's Message lives in `source`.
    code = (
        "import sys, login_etl.sqs, login_etl.leases, login_etl.source;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'"
        " or m in ('login_etl.masking', 'login_etl.transform')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


LIMIT, QUOTA = 12, 40
_STEP = st.one_of(
    st.tuples(st.just("receive"), st.integers(1, 10), st.integers(0, 10)),  # most, filled
    st.tuples(st.just("take"), st.integers(1, 15)),  # the batch size
    st.tuples(st.just("commit"), st.just(0)),
    st.tuples(st.just("let_go"), st.integers(0, 15)),  # released or deleted: first n taken
    st.tuples(st.just("close"), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_STEP, max_size=60), quota=st.sampled_from([None, QUOTA]))
def test_a_hand_never_releases_a_message_in_half(
    steps: list[tuple[str, int] | tuple[str, int, int]], quota: int | None
) -> None:
    """Any order of the loop's calls: capacity never below zero, in hand == leased +
    committed == slots used, and everything given back once the rest is let go."""
    stats = Stats()
    hand = Hand(LIMIT, visibility_timeout=30, quota=quota, count=stats.add)
    taken: list = []  # by the writer, leased, not committed
    committed: list = []  # lease dropped, not yet deleted
    made = 0
    now = 0.0

    def check() -> None:
        assert 0 <= hand.used <= LIMIT
        assert stats.in_hand == hand.used  # no reservation is pending between steps
        assert len(hand.leases) == stats.in_hand - len(committed)
        if quota is not None:
            assert stats.received <= quota

    for step in steps:
        now += 1.0
        if step[0] == "receive":
            most, filled = step[1], step[2]  # type: ignore[misc]
            n = hand.reserve(most, timeout=0)
            assert n <= most
            got = min(n, filled)
            hand.unreserve(n - got)
            messages = [msg(made + i) for i in range(got)]
            made += got
            if messages and not hand.hold(messages, now, received=got):
                hand.let_go(messages)  # closed: handed back at once
        elif step[0] == "take":
            batch = hand.take(step[1], wait=0, idle=0)
            assert len(batch) <= step[1]
            taken += batch
        elif step[0] == "commit":
            hand.committed(taken)
            committed += taken
            taken = []
        elif step[0] == "let_go":
            out = (taken + committed)[: step[1]]
            taken, committed = (
                [m for m in taken if m not in out],
                [m for m in committed if m not in out],
            )
            hand.let_go(out)
        else:
            hand.close()
        check()
    hand.let_go(hand.leftover() + taken + committed)
    taken, committed = [], []
    check()
    assert (hand.used, stats.in_hand, len(hand.leases)) == (0, 0, 0)
    assert hand.empty() and hand.leftover() == []
    assert hand.reserve(LIMIT, timeout=0) == (LIMIT if quota is None else min(LIMIT, quota - made))


def test_a_closed_hand_refuses_to_buffer_but_still_counts_until_let_go() -> None:
    stats = Stats()
    hand = Hand(4, count=stats.add)
    assert hand.reserve(10, timeout=0) == 4
    hand.close()
    assert not hand.hold([msg(1), msg(2)], now=0.0)
    assert (stats.in_hand, len(hand.leases), hand.used) == (2, 2, 4)
    hand.unreserve(2)
    hand.let_go([msg(1), msg(2)])
    assert (stats.in_hand, len(hand.leases), hand.used) == (0, 0, 0)
    assert hand.take(10, wait=30, idle=30) == []  # closed: never waits


def test_the_quota_is_spent_once_reserved_and_back_when_unreserved() -> None:
    hand = Hand(100, quota=15)
    assert hand.reserve(10, timeout=0) == 10
    assert hand.reserve(10, timeout=0) == 5
    assert hand.spent and hand.reserve(10, timeout=0) == 0
    hand.unreserve(3)  # a receive that came back three short
    assert not hand.spent and hand.reserve(10, timeout=0) == 3
    assert hand.used == 15
