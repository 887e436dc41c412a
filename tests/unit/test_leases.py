"""leases.Leases: which held messages are due for a visibility extension, given `now`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest

from login_etl.leases import Buffer, Leases
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


def test_the_buffer_hands_over_everything_in_order_in_one_take() -> None:
    buffer = Buffer()
    assert buffer.empty() and buffer.take(timeout=0) == []
    buffer.put([msg(1), msg(2)])
    buffer.put([msg(3)])
    assert not buffer.empty()
    assert buffer.take(timeout=0) == [msg(1), msg(2), msg(3)]
    assert buffer.empty() and buffer.take(timeout=0) == []


def test_a_put_from_another_thread_wakes_a_waiting_take() -> None:
    buffer = Buffer()
    threading.Timer(0.2, buffer.put, args=([msg(7)],)).start()
    started = time.monotonic()
    assert buffer.take(timeout=30) == [msg(7)]
    assert time.monotonic() - started < 20  # woken by the put, not by the timeout


def test_closing_wakes_a_waiting_take_and_later_takes_never_wait() -> None:
    buffer = Buffer()
    threading.Timer(0.2, buffer.close).start()  # after the take waits
    started = time.monotonic()
    assert buffer.take(timeout=30) == []
    assert time.monotonic() - started < 20  # woken by close, not by the timeout
    started = time.monotonic()
    assert buffer.take(timeout=30) == []
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
