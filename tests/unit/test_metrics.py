"""What `Stats` emits into the Prometheus families: label values and observed values."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from login_etl.errors import SinkUnavailable
from login_etl.metrics import Metrics, Stats
from login_etl.retry import Retrier
from login_etl.sink import WriteResult

SRC = Path(__file__).resolve().parents[2] / "src" / "login_etl"
# The label values the operations docs and the alerts are written against.
RETRY_STAGES = {"receive", "write", "delete", "extend", "prune", "lake", "startup"}
# Every stage name a retried call in the package is given, as written at its call site.
_STAGE_AT_CALL = re.compile(r'\.(?:call|failed)\(\s*"([^"]+)"')


class NoWait(threading.Event):
    """A stop event whose waits return at once: the backoff is not the point here."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


def stage_names() -> set[str]:
    names = {m for p in SRC.rglob("*.py") for m in _STAGE_AT_CALL.findall(p.read_text("utf-8"))}
    assert {"receive", "write", "kms", "init-db"} <= names  # the scan finds the call sites
    return names


def samples(metrics: Metrics, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Value of each labelled sample of `family` (counters: their _total sample)."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for fam in metrics.registry.collect()
        if fam.name == family
        for s in fam.samples
        if s.name == family + "_total"
    }


@pytest.mark.parametrize("stage", sorted(stage_names()))
def test_every_retried_call_is_counted_under_a_documented_stage(stage: str) -> None:
    metrics = Metrics()
    stats = Stats(metrics=metrics)
    # Through the retry policy, as the worker calls it: one failure, then success.
    answers = iter([SinkUnavailable("down"), "ok"])

    def flaky() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    retrier = Retrier(60, stop=NoWait(), on_retry=stats.retried)
    assert retrier.call(stage, flaky) == "ok"
    emitted = samples(metrics, "login_etl_retries")
    label = stage if stage in RETRY_STAGES else "startup"
    assert emitted == {(("stage", label),): 1.0}
    assert stats.retries_by_stage == {stage: 1}


def test_lag_from_a_producer_clock_ahead_of_ours_is_zero() -> None:
    metrics = Metrics()
    stats = Stats(metrics=metrics)
    ahead = datetime.now(UTC) + timedelta(hours=1)
    behind = datetime.now(UTC) - timedelta(hours=2)
    stats.committed(WriteResult(loaded=2), sent_at=[ahead, behind])
    lag = {s.name: s.value for f in metrics.registry.collect() for s in f.samples if s.labels == {}}
    assert lag["login_etl_lag_seconds_count"] == 2
    # The message from the future counts as no lag at all, not as an hour less.
    assert 7200 <= lag["login_etl_lag_seconds_sum"] < 7200 + 600
    smallest = next(
        s.value
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name == "login_etl_lag_seconds_bucket" and s.labels == {"le": "0.5"}
    )
    assert smallest == 1  # the clamped one, in the lowest bucket
