"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from login_etl import redact
from login_etl.masking import Masker
from login_etl.metrics import Metrics, Stats
from tests.unit.helpers import KEY_A


@pytest.fixture
def masker() -> Masker:
    """A masker with a fixed primary key and no old keys."""
    return Masker(KEY_A)


@pytest.fixture(autouse=True)
def _fresh_redact_registry() -> Iterator[None]:
    """Each test starts and ends with no registered secrets (`Settings.load` registers some)."""
    redact.forget_all()
    yield
    redact.forget_all()


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> CollectorRegistry:
    """A fresh registry per test; every `Stats()` made without `metrics` records into it.

    So the unit tests report to real Prometheus families, as a worker serving
    metrics does, and a stat without a declared family fails here.
    """
    fresh = CollectorRegistry()
    metrics = Metrics(fresh)
    init = Stats.__init__

    def with_metrics(self: Stats, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("metrics", metrics)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Stats, "__init__", with_metrics)
    return fresh
