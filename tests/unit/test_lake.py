"""The lake stage's pure parts: extra fields, date choice, marks, URLs, settings, bins."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from login_etl.config import Settings
from login_etl.errors import ConfigError
from login_etl.lake.backfill import choose_dates, refuse_losses
from login_etl.lake.rewrite import BIG_ENOUGH, bins
from login_etl.lake.table import Mark, sqlalchemy_url
from login_etl.masking import Masker
from login_etl.source import Message
from login_etl.transform import Row, transform
from tests.unit.helpers import KEY_A

BASE = {
    "user_id": "u1",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}


def test_transform_keeps_the_full_app_version() -> None:
    body = json.dumps({**BASE, "app_version": "0.96.12"})
    row = transform(Message("m1", "r", body, datetime(2026, 1, 2, tzinfo=UTC)), Masker(KEY_A))
    assert isinstance(row, Row)
    assert (row.app_version, row.app_version_raw) == (0, "0.96.12")


D = date(2026, 3, 1)


def day(n: int) -> date:
    return date.fromordinal(D.toordinal() + n)


def test_choose_dates_without_bounds_is_every_date_in_the_lake() -> None:
    assert choose_dates({day(3), day(0), day(1)}, None, None, force=False) == [
        day(0),
        day(1),
        day(3),
    ]


def test_choose_dates_with_bounds_is_every_day_between() -> None:
    known = {day(0), day(5)}
    assert choose_dates(known, day(1), day(3), force=False) == [day(1), day(2), day(3)]
    assert choose_dates(known, None, day(1), force=False) == [day(0), day(1)]
    assert choose_dates(known, day(4), None, force=False) == [day(4), day(5)]
    assert choose_dates(known, day(7), None, force=False) == [day(7)]


def test_choose_dates_refuses_dates_before_the_lake_unless_forced() -> None:
    with pytest.raises(ConfigError, match=f"first record is from {day(0)}"):
        choose_dates({day(0)}, day(-1), None, force=False)
    assert choose_dates({day(0)}, day(-1), None, force=True) == [day(-1), day(0)]
    with pytest.raises(ConfigError, match="after --until"):
        choose_dates({day(0)}, day(2), day(1), force=False)
    with pytest.raises(ConfigError, match="no records"):
        choose_dates(set(), None, None, force=True)


def test_a_backfill_that_would_lose_one_row_is_refused_unless_forced() -> None:
    before = {day(0): 10, day(1): 7}
    with pytest.raises(ConfigError, match=f"1 fewer rows than user_logins on {day(1)} \\("):
        refuse_losses(before, {day(0): 10, day(1): 6}, force=False)
    both = f"{day(0)}, {day(1)}"
    with pytest.raises(ConfigError, match=f"3 fewer rows than user_logins on {both} \\("):
        refuse_losses(before, {day(0): 9, day(1): 5}, force=False)
    with pytest.raises(ConfigError, match=f"7 fewer rows than user_logins on {day(1)} \\("):
        refuse_losses(before, {day(0): 10}, force=False)  # a date the lake lacks entirely
    refuse_losses(before, {day(0): 9, day(1): 6}, force=True)
    refuse_losses(before, {day(0): 10, day(1): 7}, force=False)  # nothing lost
    refuse_losses(before, {day(0): 12, day(1): 7, day(2): 1}, force=False)  # more is fine


def test_marks_order_by_transaction_then_row_and_round_trip() -> None:
    assert Mark(5, 100) < Mark(6, 1) < Mark(6, 2)
    assert Mark.parse(str(Mark(12345678901, 42))) == Mark(12345678901, 42)
    assert Mark() == Mark(0, 0)
    assert Mark(7, 9).params() == {"xid": "7", "id": 9}


@pytest.mark.parametrize(
    ("libpq", "expected"),
    [
        ("", "postgresql+psycopg://"),
        (
            "postgresql://etl:s3cret@db:5433/logins",
            "postgresql+psycopg://etl:s3cret@db:5433/logins",
        ),
        (
            "host=/var/run/postgresql dbname=logins user=etl",
            "postgresql+psycopg://etl@/logins?host=%2Fvar%2Frun%2Fpostgresql",
        ),
        (
            "postgresql://etl@db/logins?sslmode=require",
            "postgresql+psycopg://etl@db/logins?sslmode=require",
        ),
    ],
)
def test_sqlalchemy_url_from_libpq(libpq: str, expected: str) -> None:
    assert sqlalchemy_url(libpq) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("file:///var/lake/", "file:///var/lake"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("s3://bucket", "s3://bucket"),
        ("/var/lake", None),
        ("file://relative", None),
        ("s3://", None),
        ("gs://bucket", None),
    ],
)
def test_warehouse_setting(value: str, ok: str | None) -> None:
    env = {"LOGIN_ETL_LAKE_WAREHOUSE": value}
    if ok is None:
        with pytest.raises(ConfigError, match="LOGIN_ETL_LAKE_WAREHOUSE"):
            Settings.load(env=env)
    else:
        assert Settings.load(env=env).lake_warehouse == ok


def test_the_plain_worker_imports_no_lake_library() -> None:
    code = (
        "import sys, login_etl.cli, login_etl.service, login_etl.pipeline, login_etl.postgres;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pyiceberg', 'pyarrow', 'sqlalchemy', 'duckdb')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@dataclass(frozen=True)
class File:
    name: str
    file_size_in_bytes: int


def sizes(groups: list[list[File]]) -> list[list[int]]:
    return [[f.file_size_in_bytes for f in g] for g in groups]


@pytest.mark.parametrize(
    ("files", "target", "expected"),
    [
        ([], 100, []),
        ([10], 100, []),  # one file: nothing to merge with
        ([80, 90, 75], 100, []),  # all at least 3/4 of the target
        ([74, 74], 100, []),  # small, but no two fit in one
        ([10, 10, 10, 10], 25, [[10, 10], [10, 10]]),
        ([70, 5, 30, 20], 100, [[70, 30], [20, 5]]),  # largest first, first bin it fits
        ([60, 200, 40, 50], 100, [[60, 40]]),  # 200 stays; 50 alone is not rewritten
    ],
)
def test_bins_merge_small_files_up_to_the_target(
    files: list[int], target: int, expected: list[list[int]]
) -> None:
    found = bins([File(str(n), size) for n, size in enumerate(files)], target)
    assert sizes(found) == expected


@given(
    st.lists(st.integers(min_value=1, max_value=300), max_size=40),
    st.integers(min_value=1, max_value=200),
)
def test_bins_leave_no_two_bins_that_fit_in_one(files: list[int], target: int) -> None:
    pool = [File(str(n), size) for n, size in enumerate(files)]
    found = bins(pool, target)
    merged = [f for g in found for f in g]
    assert len(merged) == len({f.name for f in merged})  # each file in one bin at most
    for group in found:
        assert len(group) >= 2 and sum(f.file_size_in_bytes for f in group) <= target
        assert all(f.file_size_in_bytes < BIG_ENOUGH * target for f in group)
    # Every small file left alone is a bin of its own: no two bins of any kind fit together,
    # so rewriting the bins leaves nothing for the next run (up to compression).
    alone = [[f] for f in pool if f not in merged and f.file_size_in_bytes < BIG_ENOUGH * target]
    totals = [sum(f.file_size_in_bytes for f in g) for g in found + alone]
    assert all(a + b > target for a, b in combinations(totals, 2))
