"""threads.Threads: one stop for every thread; the first error stops all and is re-raised."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from login_etl.threads import Threads, stop_on_signals


def test_the_first_error_sets_the_stop_and_join_re_raises_it() -> None:
    threads = Threads()
    second_may_fail = threading.Event()

    def first() -> None:
        raise ValueError("first")

    def second() -> None:
        second_may_fail.wait(30)
        raise KeyError("second")

    waiter_saw_stop: list[bool] = []
    threads.start("waiter", lambda: waiter_saw_stop.append(threads.stop.wait(30)))
    threads.start("first", first)
    assert threads.stop.wait(30)  # the failure stopped everyone
    threads.start("second", second)
    second_may_fail.set()
    with pytest.raises(ValueError, match="first"):
        threads.join(timeout=30)
    assert waiter_saw_stop == [True]
    assert isinstance(threads.error, ValueError)


def test_threads_that_end_well_join_quietly() -> None:
    threads = Threads()
    done: list[str] = []
    for name in ("a", "b"):
        threads.start(name, lambda name=name: done.append(name))  # type: ignore[misc]
    threads.join(timeout=30)
    assert sorted(done) == ["a", "b"] and threads.stop.is_set() and threads.error is None


def test_an_error_given_by_hand_is_the_first_one() -> None:
    threads = Threads()
    threads.fail(RuntimeError("loop"))
    threads.start("late", lambda: (_ for _ in ()).throw(KeyError("late")))
    with pytest.raises(RuntimeError, match="loop"):
        threads.join(timeout=30)


def test_a_signal_sets_the_one_stop() -> None:
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(30)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM)
    )
