"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from login_etl import redact
from login_etl.masking import Masker
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
