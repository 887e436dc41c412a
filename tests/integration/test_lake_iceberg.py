"""The contract between the lake and pyiceberg: each thing `login_etl.lake.iceberg` offers.

Run against the installed pyiceberg, with the SQL catalog in the test
PostgreSQL and a file:// warehouse. A pyiceberg upgrade that changes one of
these behaviours fails here, by name, before any lake test that relies on
it (docs/lake.md, "Upgrading pyiceberg").
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

import pytest

from login_etl.errors import LakeUnavailable
from login_etl.lake import CATALOG, IDENTIFIER, iceberg
from login_etl.lake.table import (
    COLUMNS,
    PROPERTIES,
    SCHEMA,
    SPEC,
    catalog_properties,
    day,
    to_arrow,
)

pytestmark = pytest.mark.parametrize("warehouse", ["file"], indirect=True)
DAY1, DAY2 = date(2026, 3, 1), date(2026, 3, 2)
KEY = "contract.mark"


def records(n: int, on: date, mask: str = "aaaa", start: int = 0) -> Any:
    """`n` records of day `on` in the lake's schema, their masks under key id `mask`."""
    rows = [
        {
            "message_id": f"m-{on}-{start + i}",
            "sent_at": datetime(on.year, on.month, on.day, 12, tzinfo=UTC),
            "create_date": on,
            "user_id": f"u{i}",
            "device_type": "ios",
            "masked_ip": f"{mask}.ip{i}",
            "masked_device_id": f"{mask}.dev{i}",
            "locale": None,
            "app_version": 2,
            "app_version_raw": "2.3.0",
            "extra": "{}",
        }
        for i in range(n)
    ]
    return to_arrow([[r[c] for r in rows] for c in COLUMNS])


@pytest.fixture
def catalog(lake_env):
    cat = iceberg.open_catalog(
        CATALOG, catalog_properties(lake_env.database_url, lake_env.warehouse)
    )
    try:
        yield cat
    finally:
        iceberg.close_catalog(cat)


@pytest.fixture
def table(catalog):
    return iceberg.load_or_create(catalog, IDENTIFIER, SCHEMA, SPEC, PROPERTIES)


def test_create_then_load_the_same_table(catalog, table) -> None:
    again = iceberg.load_or_create(catalog, IDENTIFIER, SCHEMA, SPEC, PROPERTIES)
    assert again.metadata.table_uuid == table.metadata.table_uuid
    assert [f.name for f in again.schema().fields] == list(COLUMNS)
    assert again.spec().fields[0].name == "create_date"
    assert again.properties["commit.retry.num-retries"] == "0"
    assert iceberg.property_lineage(again, KEY) == ([], None)  # no snapshot yet
    assert iceberg.data_files(again) == []
    assert list(iceberg.scan_batches(again, iceberg.is_in("create_date", ["x"]), COLUMNS)) == []


def test_a_snapshot_property_is_read_back_through_commits_that_lack_it(table) -> None:
    iceberg.append(table, records(3, DAY1), {KEY: "1:3"})
    iceberg.append(table, records(2, DAY1, start=3), {KEY: "1:5"})
    marked = table.current_snapshot().snapshot_id
    assert iceberg.property_lineage(table, KEY) == ([marked], "1:5")
    iceberg.append(table, records(1, DAY2), {"other": "engine"})  # carries no mark
    newest = table.current_snapshot().snapshot_id
    assert iceberg.property_lineage(table, KEY) == ([newest, marked], "1:5")
    assert iceberg.property_lineage(table, "absent")[1] is None
    assert len(iceberg.snapshot_times(table)) == 3


def test_planning_filters_and_reads(table) -> None:
    iceberg.append(table, records(4, DAY1, mask="aaaa"), {KEY: "1:4"})
    iceberg.append(table, records(3, DAY2, mask="bbbb"), {KEY: "1:7"})
    entries = iceberg.data_files(table)
    assert sorted(day(e.partition) for e in entries) == [DAY1, DAY2]
    assert all(e.current_spec and not e.has_deletes for e in entries)
    assert sorted(e.file.record_count for e in entries) == [3, 4]

    on_day2 = iceberg.data_files(table, iceberg.is_in("create_date", [DAY2.isoformat()]))
    assert [day(e.partition) for e in on_day2] == [DAY2]
    # Pruned by the files' statistics alone: only day 2's masks lack "aaaa.".
    stale = iceberg.data_files(table, iceberg.any_lacks_prefix(["masked_ip"], "aaaa."))
    assert [day(e.partition) for e in stale] == [DAY2]
    both = iceberg.any_lacks_prefix(["masked_ip", "masked_device_id"], "bbbb.")
    assert [day(e.partition) for e in iceberg.data_files(table, both)] == [DAY1]

    got = iceberg.scan_batches(table, iceberg.is_in("create_date", [DAY1.isoformat()]), ["user_id"])
    rows = [r for batch in got for r in batch.to_pylist()]
    assert sorted(rows, key=str) == [{"user_id": f"u{i}"} for i in range(4)]


def rewrite(table, entry, change=None, batch_bytes: int = 1 << 20):
    """A data file of `entry`'s records (through `change`), written, not committed."""
    batches = iceberg.file_batches(
        table, entry.file, batch_bytes=batch_bytes, max_rows=1000, buffer_bytes=1 << 16
    )
    if change is not None:
        batches = (change(b) for b in batches)
    path = iceberg.new_data_path(table, day(entry.partition))
    return iceberg.write_data_file(
        table, path, entry.file.partition, batches, row_group_bytes=1 << 20
    )


def test_a_written_file_replaces_exactly_the_old_ones_and_can_be_replaced_again(table) -> None:
    iceberg.append(table, records(50, DAY1), {KEY: "1:50"})
    iceberg.append(table, records(5, DAY2), {KEY: "1:55"})
    (old,) = iceberg.data_files(table, iceberg.is_in("create_date", [DAY1.isoformat()]))
    batches = list(
        iceberg.file_batches(table, old.file, batch_bytes=64, max_rows=1000, buffer_bytes=1 << 16)
    )
    assert len(batches) > 1 and sum(b.num_rows for b in batches) == 50  # bounded batches

    def upper(batch):
        values = [v.upper() for v in batch.column("user_id").to_pylist()]
        return iceberg.with_column(batch, "user_id", values)

    new = rewrite(table, old, upper, batch_bytes=64)
    assert new.record_count == 50 and new.file_size_in_bytes > 0
    assert new.spec_id == table.metadata.default_spec_id
    assert new.file_path.startswith(table.location())
    iceberg.overwrite_files(table, [old.file], [new], {KEY: "1:55", "op": "test"})

    now = {e.file.file_path: e for e in iceberg.data_files(table)}
    assert old.file.file_path not in now and new.file_path in now
    assert len(now) == 2 and now[new.file_path].current_spec  # day 2 untouched
    assert iceberg.property_lineage(table, KEY)[1] == "1:55"
    assert table.current_snapshot().summary["op"] == "test"
    day1 = iceberg.scan_batches(table, iceberg.is_in("create_date", [DAY1.isoformat()]), COLUMNS)
    users = sorted(r["user_id"] for b in day1 for r in b.to_pylist())
    assert users == sorted(f"U{i}" for i in range(50))

    # The file just written replaced in turn: its DataFile is complete.
    again = rewrite(table, now[new.file_path])
    iceberg.overwrite_files(table, [now[new.file_path].file], [again], {KEY: "1:55"})
    assert again.file_path in {e.file.file_path for e in iceberg.data_files(table)}

    # Replacing a file that is gone changes nothing and is retryable.
    late = rewrite(table, now[new.file_path])
    with pytest.raises(LakeUnavailable):
        iceberg.overwrite_files(table, [now[new.file_path].file], [late], {KEY: "1:55"})
    iceberg.delete_file(table, late.file_path)
    iceberg.delete_file(table, late.file_path)  # already gone: fine
    assert late.file_path not in iceberg.referenced_files(table, {})


def test_a_commit_that_lost_the_race_is_retryable(catalog, table) -> None:
    iceberg.append(table, records(1, DAY1), {KEY: "1:1"})
    stale = iceberg.load_or_create(catalog, IDENTIFIER, SCHEMA, SPEC, PROPERTIES)
    iceberg.append(table, records(1, DAY1, start=1), {KEY: "1:2"})
    with pytest.raises(LakeUnavailable, match="another commit came first"):
        iceberg.append(stale, records(1, DAY1, start=2), {KEY: "1:3"})


def test_expiry_keeps_what_refs_hold_and_orphans_are_listed(table) -> None:
    for n in range(3):
        iceberg.append(table, records(1, DAY1, start=n), {KEY: f"1:{n}"})
    earlier = {e.file.file_path for e in iceberg.data_files(table)}
    iceberg.append(table, records(1, DAY1, start=3), {KEY: "1:3"})
    (last,) = [e for e in iceberg.data_files(table) if e.file.file_path not in earlier]
    times = iceberg.snapshot_times(table)
    first, second, third, fourth = sorted(times, key=times.__getitem__)
    table.manage_snapshots().create_tag(first, "audit").commit()  # another engine's tag
    assert iceberg.ref_heads(table) == {first, fourth}  # the tag and main's head
    iceberg.overwrite_files(table, [last.file], [rewrite(table, last)], {KEY: "1:3"})
    assert iceberg.ref_heads(table) - {first, fourth} == {table.current_snapshot().snapshot_id}

    cache: dict[str, list[str]] = {}
    before = iceberg.referenced_files(table, cache)
    assert earlier | {last.file.file_path, table.metadata_location} <= before
    iceberg.expire_snapshots(table, [second, third, fourth])
    assert set(iceberg.snapshot_times(table)) == {first, table.current_snapshot().snapshot_id}
    gone = before - iceberg.referenced_files(table, cache)
    assert last.file.file_path in gone  # only the expired fourth snapshot held it
    assert earlier.isdisjoint(gone)  # still current (and the tag's file)

    stray = f"{table.location()}/data/stray.parquet".removeprefix("file://")
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as f:
        f.write(b"x")
    left = iceberg.unreferenced_files(table, iceberg.referenced_files(table, cache))
    names = sorted(os.path.basename(s.path) for s in left)
    assert "stray.parquet" in names and all(s.mtime is not None for s in left)
    # The expired snapshots' files are listed too (upkeep deletes them itself).
    assert os.path.basename(last.file.file_path) in names
    for stored in left:
        iceberg.delete_stored(table, stored)
    assert not os.path.exists(stray)
    assert iceberg.unreferenced_files(table, iceberg.referenced_files(table, cache)) == []
    assert len(iceberg.unreferenced_files(table, set())) > 0  # the referenced ones are listed
    assert (
        len(
            list(
                iceberg.scan_batches(
                    table, iceberg.is_in("create_date", [DAY1.isoformat()]), ["user_id"]
                )
            )
        )
        > 0
    )
