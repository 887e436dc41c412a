"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from login_etl.masking import Masker
from tests.unit.helpers import KEY_A


@pytest.fixture
def masker() -> Masker:
    """A masker with a fixed primary key and no old keys."""
    return Masker(KEY_A)
