"""health.Health: liveness and readiness decided from recorded facts and a given `now`."""

from __future__ import annotations

import threading
import time

from login_etl.health import Health
from login_etl.metrics import Stats


def ok() -> None:
    pass


def down() -> None:
    raise OSError("connection refused")


def test_live_until_the_loop_has_been_silent_for_stall_after() -> None:
    stats = Stats()
    stats.last_activity_at = 1000.0
    health = Health(stats, {}, stall_after=60)
    assert health.live(1059.9)
    assert not health.live(1060.0)
    stats.retried("write")  # retrying an outage counts as activity
    assert health.live(stats.last_activity_at + 59)


def test_ready_needs_every_dependency_answered_recently() -> None:
    health = Health(Stats(), {"postgresql": ok, "sqs": ok}, stall_after=60)
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

    health = Health(Stats(), {"postgresql": ok, "sqs": down, "lake": hung}, stall_after=60)
    try:
        health.probe(timeout=0.3)
    finally:
        release.set()
    answers = health.ready(time.monotonic())
    assert answers == {"postgresql": True, "sqs": False, "lake": False}
