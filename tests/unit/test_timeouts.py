"""The time left of a retry budget, turned into the clients' own timeouts (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl.postgres import CONNECT_TIMEOUT, MIN_CONNECT_TIMEOUT, connect_timeout_within
from login_etl.sqs import CALL_TIMEOUT, MIN_CALL_TIMEOUT, call_timeout_within


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (300.0, CONNECT_TIMEOUT),  # a long budget: libpq's usual 10 s
        (10.0, 10),
        (4.0, 4),  # a 4 s budget: a 4 s attempt, not 10
        (4.9, 4),  # whole seconds, rounded down: never past the time left ...
        (2.5, 2),
        (1.2, MIN_CONNECT_TIMEOUT),  # ... except libpq's 2 s floor
        (0.0, MIN_CONNECT_TIMEOUT),
        (-3.0, MIN_CONNECT_TIMEOUT),
    ],
)
def test_libpq_connect_timeout_is_the_time_left_in_whole_seconds(
    seconds: float, expected: int
) -> None:
    timeout = connect_timeout_within(seconds)
    assert timeout == expected and isinstance(timeout, int)


@given(st.floats(-10, 10_000, allow_nan=False))
def test_a_connect_never_outlasts_the_time_left_by_more_than_libpqs_floor(seconds: float) -> None:
    timeout = connect_timeout_within(seconds)
    assert MIN_CONNECT_TIMEOUT <= timeout <= CONNECT_TIMEOUT
    assert timeout <= max(seconds, MIN_CONNECT_TIMEOUT)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (300.0, CALL_TIMEOUT),
        (5.0, CALL_TIMEOUT),
        (4.2, 5.0),  # rounded up to whole seconds: a few clients at most ...
        (2.0, 2.0),
        (1.5, 2.0),
        (0.3, MIN_CALL_TIMEOUT),  # ... and a last attempt that can still succeed
        (0.0, MIN_CALL_TIMEOUT),
    ],
)
def test_an_sqs_call_timeout_is_the_time_left_in_whole_seconds(
    seconds: float, expected: float
) -> None:
    assert call_timeout_within(seconds) == expected


@given(st.floats(-10, 10_000, allow_nan=False))
def test_an_sqs_call_outlasts_the_time_left_by_under_a_second(seconds: float) -> None:
    timeout = call_timeout_within(seconds)
    assert MIN_CALL_TIMEOUT <= timeout <= CALL_TIMEOUT
    assert timeout < max(seconds, MIN_CALL_TIMEOUT) + 1
