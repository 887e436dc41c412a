"""The time left of a retry budget, turned into the clients' own timeouts (pure)."""

from __future__ import annotations

import botocore.exceptions
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from hypothesis import given
from hypothesis import strategies as st

from login_etl import sqs
from login_etl.postgres import CONNECT_TIMEOUT, MIN_CONNECT_TIMEOUT, connect_timeout_within
from login_etl.sqs import (
    CALL_TIMEOUT,
    MIN_CALL_TIMEOUT,
    POLL_SLACK,
    call_timeout_within,
    poll_timeout_within,
)


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


@pytest.mark.parametrize(
    ("wait", "seconds", "expected"),
    [
        (20, 300.0, 20 + POLL_SLACK),  # a long budget: the usual slack past the wait
        (1, 4.0, 4.0),  # a 4 s budget, 1 s polls: cut at 4 s, not 11
        (1, 2.2, 3.0),  # whole seconds, rounded up
        (1, 0.5, 1.0 + MIN_CALL_TIMEOUT),  # the wait itself is never cut
        (20, 5.0, 20.0 + MIN_CALL_TIMEOUT),
    ],
)
def test_a_long_polls_read_timeout_cuts_only_its_slack(
    wait: int, seconds: float, expected: float
) -> None:
    assert poll_timeout_within(wait, seconds) == expected


def test_a_source_keeps_one_client_per_shorter_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded calls reuse a client per whole-second timeout; the usual one otherwise."""
    for name, value in {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    source = sqs.SqsSource("http://127.0.0.1:1/123456789012/q", max_wait=1)
    assert source._within(None) is source._within(300) is source.client
    two = source._within(1.2)
    assert two is source._within(2.0) and two is not source.client
    assert two.meta.config.read_timeout == two.meta.config.connect_timeout == 2.0
    assert source._receiver_within(1, 300) is source._receiver
    poll = source._receiver_within(1, 3.5)
    assert poll.meta.config.read_timeout == 4.0  # the 1 s wait + 2.5 s rounded up
    assert poll is source._within(3.2)  # one client per timeout, whatever the call


def test_an_sqs_call_is_tried_once_inside_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries are the worker's policy: a hung call must cost one timeout, not two.

    botocore reads a Config's ``max_attempts`` as retries after the first try; two
    tries of a hung call took twice the call timeout (10 s for a 5 s one).
    """
    for name, value in {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}.items():
        monkeypatch.setenv(name, value)
    url = "http://127.0.0.1:1/123456789012/q"
    client = sqs.client_factory(url, region_name="us-east-1", endpoint_url=url)("json")
    sent: list[str] = []

    def unavailable(request: AWSPreparedRequest, **_: object) -> AWSResponse:
        sent.append(request.url)  # answered here: nothing leaves the process
        return AWSResponse(request.url, 503, {}, _Raw(b'{"__type": "ServiceUnavailable"}'))

    client.meta.events.register("before-send.sqs", unavailable)
    with pytest.raises(botocore.exceptions.ClientError):
        client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert len(sent) == 1


class _Raw:
    """The raw body botocore reads an answer's content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object) -> list[bytes]:
        return [self._body]
