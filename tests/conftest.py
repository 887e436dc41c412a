"""Shared test setup: a clean LOGIN_ETL_* environment for every test."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sample_data.json.gz"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own settings."""
    for name in list(os.environ):
        if name.startswith(("LOGIN_ETL_", "AWS_", "PG")) and name != "LOGIN_ETL_PG_BINDIR":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root and login_etl loggers (on a runner's stderr); undo it."""
    loggers = [logging.getLogger("login_etl"), logging.getLogger()]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    logging.captureWarnings(False)


@pytest.fixture
def sample_path() -> Path:
    """The brief's 100 sample records (third-party data, read in place)."""
    if not SAMPLE.exists():
        pytest.skip("optional third-party sample file ../shared/data/sample_data.json.gz absent")
    return SAMPLE
