"""retry.Backoff and retry.Retrier walked with plain numbers: no sleeps, no real clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl.errors import ConfigError, RetryTimeExceeded, SinkUnavailable
from login_etl.retry import Backoff, Retrier


def test_delays_start_near_initial_and_double_with_jitter() -> None:
    b = Backoff.starting(100.0, 1000.0)
    delays = [b.update_delay(100.0, rand=lambda: 0.5) for _ in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]  # rand 0.5: no jitter


def test_delays_are_capped() -> None:
    b = Backoff.starting(0.0, 10_000.0)
    delays = [b.update_delay(0.0, rand=lambda: 0.5) for _ in range(12)]
    assert delays[-1] == 10.0 and max(delays) == 10.0


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 0.45), (0.999999, 0.55)])
def test_jitter_is_ten_percent_either_way(rand: float, expected: float) -> None:
    assert Backoff.starting(0.0, 100.0).update_delay(0.0, rand=lambda: rand) == pytest.approx(
        expected, abs=1e-5
    )


def test_delay_is_clamped_to_the_give_up_instant() -> None:
    b = Backoff.starting(0.0, 3.0)
    b.update_delay(0.0, rand=lambda: 0.5)  # 0.5
    b.update_delay(0.5, rand=lambda: 0.5)  # 1.0
    assert b.update_delay(2.8, rand=lambda: 0.5) == pytest.approx(0.2)  # not 2.0
    assert not b.time_to_give_up(2.99)
    assert b.time_to_give_up(3.0)


@given(st.lists(st.floats(0, 1, exclude_max=True), min_size=1, max_size=30))
def test_delays_never_pass_the_give_up_instant(rands: list[float]) -> None:
    b = Backoff.starting(0.0, 20.0)
    now = 0.0
    for r in rands:
        delay = b.update_delay(now, rand=lambda r=r: r)
        assert 0.0 <= delay <= 11.0
        now += delay
        assert now <= 20.0 + 1e-9


class Clock:
    """A clock that moves only when the retrier waits on its stop event."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TickingStop(threading.Event):
    """A stop event whose wait advances the fake clock instead of sleeping."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.clock.now += timeout or 0.0
        return self.is_set()


def failing(times: int, error: Exception) -> tuple[list[int], object]:
    calls = [0]

    def fn() -> str:
        calls[0] += 1
        if calls[0] <= times:
            raise error
        return "ok"

    return calls, fn


def test_retrier_retries_retryable_errors_and_reports_each_retry() -> None:
    clock = Clock()
    stop = TickingStop(clock)
    stages: list[str] = []
    retrier = Retrier(60, stop=stop, on_retry=stages.append, clock=clock)
    calls, fn = failing(3, SinkUnavailable("restarting"))
    assert retrier.call("write", fn) == "ok"  # type: ignore[arg-type]
    assert calls == [4]
    assert stages == ["write"] * 3
    assert len(stop.waits) == 3 and stop.waits[0] == pytest.approx(0.5, rel=0.11)


def test_retrier_gives_up_after_max_time_measured_from_the_first_failure() -> None:
    clock = Clock()
    clock.now = 1000.0
    stop = TickingStop(clock)
    retrier = Retrier(7, stop=stop, clock=clock)
    calls, fn = failing(10**9, SinkUnavailable("down"))
    with pytest.raises(RetryTimeExceeded, match="write: gave up after 7s: down"):
        retrier.call("write", fn)  # type: ignore[arg-type]
    assert clock.now == pytest.approx(1007.0)  # the last wait ends exactly at the give-up time
    assert calls[0] >= 4


def test_a_call_that_hangs_counts_its_own_time_toward_the_budget() -> None:
    """A hung call fails only at its timeout: the outage began when it started."""
    clock = Clock()
    clock.now = 1000.0
    stop = TickingStop(clock)
    retrier = Retrier(7, stop=stop, clock=clock)
    calls = [0]

    def hangs_then_fails() -> str:
        calls[0] += 1
        clock.now += 4  # each attempt hangs 4 s before its timeout fires
        raise SinkUnavailable("read timeout")

    with pytest.raises(RetryTimeExceeded, match="gave up after 7s"):
        retrier.call("write", hangs_then_fails)
    # From 1000: fails at 1004, waits ~0.5, fails again at ~1008.5 (past 1007): gives up.
    assert calls[0] == 2
    assert clock.now == pytest.approx(1008.5, abs=0.06)


def test_retrier_passes_other_errors_through_at_once() -> None:
    clock = Clock()
    stop = TickingStop(clock)
    calls, fn = failing(1, ConfigError("bad queue"))
    with pytest.raises(ConfigError):
        Retrier(60, stop=stop, clock=clock).call("receive", fn)  # type: ignore[arg-type]
    assert calls == [1] and stop.waits == []


def test_retrier_does_not_retry_once_stopped() -> None:
    clock = Clock()
    stop = TickingStop(clock)
    stop.set()
    calls, fn = failing(1, SinkUnavailable("down"))
    with pytest.raises(RetryTimeExceeded, match="stopped while failing"):
        Retrier(60, stop=stop, clock=clock).call("delete", fn)  # type: ignore[arg-type]
    assert calls == [1] and stop.waits == []


def test_failed_keeps_one_give_up_instant_across_calls() -> None:
    clock = Clock()
    retrier = Retrier(10, clock=clock)
    backoff = retrier.failed("extend", SinkUnavailable("x"), None)
    clock.now = 9.9
    assert retrier.failed("extend", SinkUnavailable("x"), backoff) is backoff
    clock.now = 10.0
    with pytest.raises(RetryTimeExceeded, match="extend: gave up after 10s"):
        retrier.failed("extend", SinkUnavailable("x"), backoff)


def test_time_left_runs_down_to_the_give_up_instant_and_stays_at_zero() -> None:
    b = Backoff.starting(100.0, 4.0)
    assert [b.time_left(t) for t in (100.0, 101.5, 104.0, 110.0)] == [4.0, 2.5, 0.0, 0.0]


def test_each_attempt_is_given_the_time_left_before_give_up() -> None:
    """The first attempt may take the whole budget; each retry only what is left of it."""
    clock = Clock()
    clock.now = 1000.0
    stop = TickingStop(clock)
    attempts: list[tuple[float, float]] = []  # (when it began, the seconds it was given)

    def fails_after_a_second(seconds: float) -> str:
        attempts.append((clock.now, seconds))
        clock.now += min(seconds, 1.0)
        raise SinkUnavailable("connection timeout expired")

    with pytest.raises(RetryTimeExceeded, match="gave up after 4s"):
        Retrier(4, stop=stop, clock=clock).call_within("init-db", fails_after_a_second)
    assert attempts[0] == (1000.0, 4.0)
    assert len(attempts) >= 3
    for began, seconds in attempts[1:]:
        assert seconds == pytest.approx(1004.0 - began)  # the outage began at 1000
    assert clock.now <= 1004.0 + 1.0  # the last attempt ended within its own bound


def test_a_hung_first_attempt_bounded_by_its_time_gives_up_at_the_budget() -> None:
    """Measured before the fix: a 10 s connect timeout against a 4 s budget gave up at 10 s."""
    clock = Clock()
    stop = TickingStop(clock)

    def hangs_until_its_timeout(seconds: float) -> str:
        clock.now += min(seconds, 10.0)  # a client timeout of 10 s, cut to `seconds`
        raise SinkUnavailable("connection timeout expired")

    with pytest.raises(RetryTimeExceeded, match="gave up after 4s"):
        Retrier(4, stop=stop, clock=clock).call_within("init-db", hangs_until_its_timeout)
    assert clock.now == 4.0 and stop.waits == []
