"""Migrations are numbered 1, 2, 3… once each (login_etl.schema)."""

from __future__ import annotations

import pytest

from login_etl import schema


def test_the_shipped_migrations_are_numbered_without_gaps_or_duplicates() -> None:
    shipped = schema.migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert schema.latest() == len(shipped) >= 2
    assert shipped[0].name == "0001_schema.sql"


@pytest.mark.parametrize(
    "names",
    [
        ["0001_a.sql", "0003_c.sql"],  # a gap
        ["0001_a.sql", "0002_b.sql", "0002_c.sql"],  # a duplicate
        ["0002_b.sql"],  # not from 1
        ["0001_a.sql", "2_b.sql"],  # not NNNN_
        ["0000_a.sql", "0001_b.sql"],  # from 0
    ],
)
def test_a_gap_duplicate_or_stray_name_is_refused(names: list[str]) -> None:
    with pytest.raises(ValueError):
        schema.numbered(names)


def test_files_are_ordered_by_number_not_by_listing() -> None:
    assert schema.numbered(["0002_b.sql", "0001_a.sql"]) == [(1, "0001_a.sql"), (2, "0002_b.sql")]
