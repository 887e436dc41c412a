"""What `Stats` emits into the Prometheus families: label values and observed values."""

from __future__ import annotations

import re
import threading
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from login_etl.errors import SinkUnavailable
from login_etl.metrics import FAMILIES, LAKE_DROP_REASONS, PLAIN_COUNTERS, Metrics, Stats
from login_etl.retry import Retrier
from login_etl.sink import WriteResult

SRC = Path(__file__).resolve().parents[2] / "src" / "login_etl"
# The label values the operations docs and the alerts are written against.
RETRY_STAGES = {"receive", "write", "delete", "extend", "prune", "lake", "startup"}
# Every stage name a retried call in the package is given, as written at its call site.
_STAGE_AT_CALL = re.compile(r'\.(?:call|call_within|failed)\(\s*"([^"]+)"')


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
    # Every declared stage is exported from the start; only this one was counted.
    assert set(emitted) == {(("stage", s),) for s in RETRY_STAGES}
    assert {k: v for k, v in emitted.items() if v} == {(("stage", label),): 1.0}
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


def exported(registry: CollectorRegistry) -> dict[str, list[dict[str, str]]]:
    """The label sets of each login_etl family in the /metrics text, parsed back."""
    text = generate_latest(registry).decode()
    return {
        family.name: [{k: v for k, v in s.labels.items() if k != "le"} for s in family.samples]
        for family in text_string_to_metric_families(text)
        # The text parser reads a counter's or histogram's `_created` as a family of its own.
        if family.name.startswith("login_etl_") and not family.name.endswith("_created")
    }


def test_every_declared_family_is_exported_with_its_declared_labels(
    registry: CollectorRegistry,
) -> None:
    stats = Stats()  # the unit tests' registry, as every Stats() here records into
    assert stats.metrics is not None
    # One of every event the worker reports.
    stats.add(**dict.fromkeys(PLAIN_COUNTERS, 1), in_hand=1)
    stats.retried("receive")
    stats.committed(
        WriteResult(loaded=1, rejected=1, reasons={"invalid_json": 1}),
        seconds=0.1,
        sent_at=[datetime.now(UTC)],
    )
    stats.lake_outbox(3)
    stats.lake_dropped(sorted(LAKE_DROP_REASONS))
    stats.metrics.queue_depth("main", 1, 2, 3)
    stats.metrics.queue_depth("dlq", 0, 0, 0)

    families = exported(registry)
    assert set(families) == {f"login_etl_{f.name}" for f in FAMILIES}
    for declared in FAMILIES:
        label_sets = families[f"login_etl_{declared.name}"]
        assert label_sets, declared.name
        names = {label for label, _ in declared.labels}
        assert all(set(labels) == names for labels in label_sets), declared.name
        for label, values in declared.labels:
            seen = {labels[label] for labels in label_sets}
            assert seen == (values if values is not None else seen), (declared.name, label)


def test_counters_with_closed_labels_are_exported_at_zero_before_any_event(
    registry: CollectorRegistry,
) -> None:
    Stats()
    families = exported(registry)
    assert {labels["outcome"] for labels in families["login_etl_messages"]} == {
        "loaded",
        "rejected",
        "duplicate",
    }
    assert {labels["stage"] for labels in families["login_etl_retries"]} == RETRY_STAGES
    reasons = {labels["reason"] for labels in families["login_etl_lake_values_dropped"]}
    assert reasons == LAKE_DROP_REASONS


def test_an_undeclared_counter_or_label_value_raises() -> None:
    stats = Stats()
    with pytest.raises(ValueError, match="recieved"):
        stats.add(recieved=1)
    assert stats.snapshot()["received"] == 0  # nothing was counted
    metrics = Metrics()
    with pytest.raises(ValueError, match="no metric family"):
        metrics.family("received_total")
    with pytest.raises(ValueError, match="duplicates"):
        metrics.family("messages", outcome="duplicates")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.family("messages")
    with pytest.raises(ValueError, match="takes labels"):
        metrics.family("batches", outcome="loaded")


def test_every_plain_counter_has_a_stats_field_and_is_in_the_snapshot() -> None:
    ints = {f.name for f in fields(Stats) if f.type == "int"}
    assert PLAIN_COUNTERS <= ints
    assert PLAIN_COUNTERS <= set(Stats().snapshot())
