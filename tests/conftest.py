"""Shared test setup: a clean LOGIN_ETL_* environment for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sample_data.json.gz"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own settings."""
    for name in list(os.environ):
        if name.startswith(("LOGIN_ETL_", "AWS_", "PG")) and name != "LOGIN_ETL_PG_BINDIR":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sample_path() -> Path:
    """The brief's 100 sample records (third-party data, read in place)."""
    if not SAMPLE.exists():
        pytest.skip("optional third-party sample file ../shared/data/sample_data.json.gz absent")
    return SAMPLE
