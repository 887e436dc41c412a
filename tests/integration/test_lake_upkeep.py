"""Compaction and rekey of the lake, on real services: bounded files and bounded memory.

`lake maintain` merges small files into files of at most the target size,
a bin at a time, and `rekey` rewrites only the files holding old masks; both
keep every record as it was (bar the masks) and carry the outbox mark
forward, so a flush after them appends nothing twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from login_etl import service
from login_etl.config import Settings
from login_etl.errors import LakeUnavailable, LoginEtlError
from login_etl.lake import rewrite, upkeep, writer
from login_etl.lake.table import MARK_KEY, Lake, mark_of, partitions
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.sqlfiles import query as named_query

from .helpers import LAKE_DAY as DAY
from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import lake_event as event
from .helpers import lake_flush as flush
from .helpers import lake_records, load_directly, query, scalar

both = pytest.mark.parametrize("warehouse", ["file", "s3"], indirect=True)
PER_FILE = 1500  # records per writer pass: big enough that a file is mostly data
MASKS = ("masked_ip", "masked_device_id")


def by_id(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["message_id"])


class Table:
    """The lake's table as committed now, and the catalog closed after use."""

    def __init__(self, env) -> None:
        self.lake = Lake(env.database_url, env.warehouse)
        self.table = self.lake.table()

    def __enter__(self):
        return self.table

    def __exit__(self, *exc: object) -> None:
        self.lake.close()


def day_files(env) -> dict[Any, dict[str, int]]:
    """Each date's current data files: path → size in bytes."""
    with Table(env) as table:
        return {
            day: {f.file_path: f.file_size_in_bytes for f in files}
            for day, files in partitions(table).items()
        }


def load_passes(env, passes: int, sent_at=DAY, start: int = 0, per_file: int = PER_FILE) -> int:
    """`passes` writer passes of `per_file` records each on one date; returns the next id."""
    for n in range(passes):
        first = start + n * per_file
        bodies = [json.dumps(event(i)) for i in range(first, first + per_file)]
        load_directly(env, bodies, sent_at, first)
        assert writer.flush_once(Settings.load()).appended == len(bodies)
    return start + passes * per_file


def crash_after_commit(env, monkeypatch) -> None:
    """A flush that commits to Iceberg and dies before deleting its outbox rows."""
    real = writer.forget
    calls: list[object] = []

    def forget(conn, mark):
        calls.append(mark)
        if (
            len(calls) == 2
        ):  # the first forgets what earlier passes left; the second follows the append
            raise KeyboardInterrupt("power cut")
        return real(conn, mark)

    monkeypatch.setattr(writer, "forget", forget)
    with pytest.raises(KeyboardInterrupt):
        writer.flush_once(Settings.load())
    monkeypatch.setattr(writer, "forget", real)


@both
def test_compaction_makes_bounded_files_and_keeps_records_and_mark(lake_env, monkeypatch) -> None:
    last = load_passes(lake_env, 11)
    other = DAY + timedelta(days=1)
    # The 12th pass writes a file on each date, and dies before its outbox delete.
    load_directly(lake_env, [json.dumps(event(i)) for i in range(last, last + PER_FILE)], DAY, last)
    load_directly(
        lake_env,
        [json.dumps(event(i)) for i in range(last + PER_FILE, last + PER_FILE + 10)],
        other,
        last + PER_FILE,
    )
    crash_after_commit(lake_env, monkeypatch)
    total = last + PER_FILE + 10
    pending = scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox")
    assert pending == PER_FILE + 10  # in the lake already, still in the outbox

    before_files = day_files(lake_env)
    small = before_files[DAY.date()]
    assert len(small) == 12 and len(before_files[other.date()]) == 1
    before = by_id(lake_records(lake_env))
    assert len(before) == total
    with Table(lake_env) as table:
        mark, snapshots = mark_of(table), len(table.metadata.snapshots)
        old_snapshot = table.current_snapshot().snapshot_id
    # A target of 3.5 small files: bins of three, so four files, each under the target.
    target = int(3.5 * max(small.values()))
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    option = ("--target-file-mb", f"{target / 2**20:.9f}")
    done = cli(env, "lake", "maintain", *option)
    assert done.returncode == 0, done.stderr
    assert "compacted 1 partitions (12 files into 4)" in done.stdout, done.stdout

    after_files = day_files(lake_env)
    merged = after_files[DAY.date()]
    assert len(merged) == 4 and not set(merged) & set(small)
    assert all(size <= target for size in merged.values()), (merged, target)
    assert after_files[other.date()] == before_files[other.date()]  # one file: left alone
    assert by_id(lake_records(lake_env)) == before  # every column of every record
    with Table(lake_env) as table:
        assert len(table.metadata.snapshots) == snapshots + 1  # one snapshot for the date
        snapshot = table.current_snapshot()
        summary = snapshot.summary
        assert summary["login-etl.operation"] == "compact"
        assert summary[MARK_KEY] == str(mark) and mark_of(table) == mark
        assert (summary["deleted-data-files"], summary["added-data-files"]) == ("12", "4")
        # Snapshots younger than --older-than-seconds stay, and so do the files they hold.
        old = table.scan(snapshot_id=old_snapshot).to_arrow().to_pylist()
        assert by_id(old) == before
    assert all(table.io.new_input(path).exists() for path in small)

    # The mark went forward: the flush finds the crashed pass's rows in the lake.
    out = flush(lake_env)
    assert "appended 0 records" in out and "0 rows left in the outbox" in out
    assert by_id(lake_records(lake_env)) == before

    again = cli(env, "lake", "maintain", *option)
    assert again.returncode == 0, again.stderr
    assert "compacted 0 partitions (0 files into 0)" in again.stdout
    assert day_files(lake_env) == after_files
    with Table(lake_env) as table:
        assert len(table.metadata.snapshots) == snapshots + 1


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_compaction_merges_again_what_comes_out_smaller_so_the_next_run_has_nothing(
    lake_env,
) -> None:
    # Files of 5 records are mostly footer: two merged come out far smaller
    # than the two together, so the first bins' files fit together again.
    total = load_passes(lake_env, 8, per_file=5)
    small = day_files(lake_env)[DAY.date()]
    target = int(2.2 * max(small.values()))
    settings = Settings.load()
    before = by_id(lake_records(lake_env))
    first = upkeep.maintain(settings, target_file_mb=target / 2**20)
    # Round one merges pairs (8 into 4); the rounds after merge those again.
    assert first.compacted == 1 and first.merged > 8 and first.written > 4
    merged = day_files(lake_env)[DAY.date()]
    assert first.merged - first.written == len(small) - len(merged)
    sizes = sorted(s for s in merged.values() if s < 0.75 * target)
    assert len(sizes) < 2 or sizes[0] + sizes[1] > target  # no two small files fit in one
    assert by_id(lake_records(lake_env)) == before and len(before) == total
    second = upkeep.maintain(settings, target_file_mb=target / 2**20)
    assert (second.compacted, second.merged, second.written) == (0, 0, 0)
    assert day_files(lake_env)[DAY.date()] == merged


def masks_under(records: list[dict[str, Any]], masker: Masker) -> bool:
    return all(masker.is_current(r[m]) for r in records for m in MASKS)


@both
def test_rekey_rewrites_only_files_with_old_masks_a_batch_at_a_time(lake_env, monkeypatch) -> None:
    old_key, new_key = lake_env.key, generate_key()
    nxt = load_passes(lake_env, 3)  # three files under the old key
    monkeypatch.setenv("LOGIN_ETL_MASKING_KEY", new_key)
    monkeypatch.setenv("LOGIN_ETL_MASKING_OLD_KEYS", old_key)
    lake_env.key = new_key  # load_directly masks with it
    nxt = load_passes(lake_env, 1, DAY, nxt)  # the same date, under the new key
    other = DAY + timedelta(days=1)
    end = load_passes(lake_env, 1, other, nxt)
    before = by_id(lake_records(lake_env))
    files = day_files(lake_env)
    with Table(lake_env) as table:
        mark = mark_of(table)
    old_only, new_only = Masker(decode_key(old_key)), Masker(decode_key(new_key))
    stale = {r["message_id"] for r in before if not new_only.is_current(r["masked_ip"])}
    assert len(stale) == 3 * PER_FILE

    # Small reads and row groups: each file is rewritten in many pieces.
    monkeypatch.setattr(rewrite, "READ_BATCH_BYTES", 16 << 10)
    monkeypatch.setattr(rewrite, "ROW_GROUP_BYTES", 64 << 10)
    settings = Settings.load()
    result = upkeep.rekey(settings, settings.masker())
    assert (result.rows, result.partitions, result.outbox, result.unreadable) == (
        3 * PER_FILE,
        1,
        0,
        0,
    )

    after = by_id(lake_records(lake_env))
    assert len(after) == len(before) == end
    plain = [{k: v for k, v in r.items() if k not in MASKS} for r in before]
    assert [{k: v for k, v in r.items() if k not in MASKS} for r in after] == plain
    assert masks_under(after, new_only)
    for b, a in zip(before, after, strict=True):
        was = old_only if b["message_id"] in stale else new_only
        for column, field in zip(MASKS, ("ip", "device_id"), strict=True):
            assert new_only.unmask(field, a[column]) == was.unmask(field, b[column])
            if b["message_id"] not in stale:
                assert a[column] == b[column]
    # Only the three stale files were replaced; the others are the same files.
    now = day_files(lake_env)
    assert now[other.date()] == files[other.date()]
    kept = set(files[DAY.date()]) & set(now[DAY.date()])
    assert len(kept) == 1 and len(now[DAY.date()]) == 4
    with Table(lake_env) as table:
        assert mark_of(table) == mark
        assert table.current_snapshot().summary["login-etl.operation"] == "rekey"
        for path in set(now[DAY.date()]) - kept:
            with table.io.new_input(path).open() as stream:
                assert pq.ParquetFile(stream).metadata.num_row_groups > 1

    again = upkeep.rekey(settings, settings.masker())
    assert (again.rows, again.partitions) == (0, 0)
    load_directly(lake_env, [json.dumps(event(end))], other, end)
    flush(lake_env)
    ids = [r["message_id"] for r in lake_records(lake_env)]
    assert len(ids) == len(set(ids)) == end + 1


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_one_library_call_rekeys_the_table_the_bodies_and_the_lake(lake_env, monkeypatch) -> None:
    old_key, new_key = lake_env.key, generate_key()
    nxt = load_passes(lake_env, 1, per_file=50)  # in the lake under the old key
    bodies = [json.dumps(event(i)) for i in range(nxt, nxt + 7)] + ["not json"]
    load_directly(lake_env, bodies, DAY, nxt)  # 7 in the outbox, 1 sealed rejected body
    url = lake_env.database_url
    assert scalar(url, "SELECT count(*) FROM login_etl_lake_outbox") == 7  # not appended yet
    monkeypatch.setenv("LOGIN_ETL_MASKING_KEY", new_key)
    monkeypatch.setenv("LOGIN_ETL_MASKING_OLD_KEYS", old_key)

    result = service.rekey_masks(Settings.load())

    new_only = Masker(decode_key(new_key))
    assert (result.rows, result.bodies) == (57, 1)
    assert (result.lake_records, result.lake_outbox) == (50, 7)
    assert (result.lake_partitions, result.unreadable) == (1, 0)
    assert masks_under(lake_records(lake_env), new_only)
    for table in ("user_logins", "login_etl_lake_outbox"):
        masks = query(url, f"SELECT masked_ip, masked_device_id FROM {table}")
        assert masks and all(new_only.is_current(m) for row in masks for m in row)
    sealed = scalar(url, "SELECT sealed_body FROM user_logins_rejected")
    assert sealed.startswith(f"{new_only.key_id}.")


CHILD = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    from login_etl.config import Settings
    from login_etl.lake import rewrite, upkeep
    from login_etl.lake.table import Lake, partitions

    def peak():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    settings = Settings.load()
    lake = Lake(settings.database_url, settings.lake_warehouse)
    table = lake.table()
    [[first, *_]] = partitions(table).values()
    # The baseline: catalog, manifests, Parquet's reader and writer (their code
    # and the allocator's arenas) warmed on one small file.
    import pyarrow as pa, pyarrow.parquet as pq
    with table.io.new_input(first.file_path).open() as stream:
        sample = pq.read_table(stream)
    pq.write_table(sample, pa.BufferOutputStream(), compression="zstd")
    del sample
    lake.close()
    baseline = peak()
    rewrite.ROW_GROUP_BYTES = 4 << 20
    result = upkeep.maintain(settings, older_than=timedelta(days=1))
    print(json.dumps({"baseline": baseline, "peak": peak(), "written": result.written}))
    """
)


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_compacting_a_large_partition_keeps_memory_bounded(lake_env) -> None:
    import pyarrow as pa

    from login_etl.lake.table import ARROW_SCHEMA

    # 40 files of 2,500 records on one date, each with 2 KB of `extra`: some
    # 250 MB in Arrow, 4 MB on disk. Appended straight to the table (the outbox
    # path is tested above; here only the size matters).
    rows, files, in_memory = 2500, 40, 0
    with Table(lake_env) as table:
        for n in range(files):
            ids = range(n * rows, (n + 1) * rows)
            data = pa.Table.from_pydict(
                {
                    "message_id": [f"m-{i}" for i in ids],
                    "sent_at": [DAY] * rows,
                    "create_date": [DAY.date()] * rows,
                    "user_id": [f"user-{i}" for i in ids],
                    "device_type": ["ios"] * rows,
                    "masked_ip": [f"k.{i * 2654435761 % 2**61:x}" for i in ids],
                    "masked_device_id": [f"k.{i * 40503 % 2**31:x}" for i in ids],
                    "locale": ["RU"] * rows,
                    "app_version": [3] * rows,
                    "app_version_raw": ["3.1.4"] * rows,
                    "extra": [json.dumps({"note": f"session {i} " * 150}) for i in ids],
                },
                schema=ARROW_SCHEMA,
            )
            in_memory += data.nbytes
            table.append(data, snapshot_properties={MARK_KEY: f"1:{(n + 1) * rows}"})
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    grown = report["peak"] - report["baseline"]
    assert report["written"] == 1  # the whole date in one bin, one file ...
    assert [len(f) for f in day_files(lake_env).values()] == [1]
    # ... yet memory grew by a small part of the date's records in Arrow: reading
    # the date whole would need all of it.
    assert grown < in_memory / 4, (grown, in_memory)


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_maintain_keeps_a_tagged_snapshot_and_its_files(lake_env) -> None:
    # Spark and Trino users tag a snapshot to travel back to it; a tag protects it.
    load_passes(lake_env, 2, per_file=5)
    with Table(lake_env) as table:
        first = table.snapshots()[0].snapshot_id
        table.manage_snapshots().create_tag(first, "audit").commit()
        tagged = by_id(table.scan(snapshot_id=first).to_arrow().to_pylist())
    assert len(tagged) == 5
    settings = Settings.load()
    done = upkeep.maintain(settings, older_than=timedelta(0), retain_last=1)
    assert done.expired >= 1  # the untagged old snapshots went
    with Table(lake_env) as table:
        assert table.snapshot_by_name("audit").snapshot_id == first
        assert by_id(table.scan(snapshot_id=first).to_arrow().to_pylist()) == tagged
    assert len(lake_records(lake_env)) == 10


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_maintain_that_lost_its_writer_lock_deletes_no_orphans(lake_env, monkeypatch) -> None:
    # The lock's session dies mid-run (a dropped idle connection, a restart):
    # a writer may now take the lock and write a file it has not committed
    # yet. Orphan removal must not go on as if the writers were still kept out.
    load_passes(lake_env, 1, per_file=5)
    with Table(lake_env) as table:
        in_flight = f"{table.location()}/data/create_date={DAY.date()}/in-flight.parquet"
        in_flight_path = table.io.parse_location(in_flight)[2]
    real = upkeep._compact

    def compact(table, *args):
        pids = [
            row[0]
            for row in query(
                lake_env.database_url,
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
        ]
        assert len(pids) == 1
        scalar(lake_env.database_url, "SELECT pg_terminate_backend(%s)", pids[0])
        with table.io.new_output(in_flight).create() as out:  # a writer's next file
            out.write(b"PAR1")
        return real(table, *args)

    monkeypatch.setattr(upkeep, "_compact", compact)
    # A cutoff a minute ahead: the file is older than it, so only the lock check keeps it.
    later = datetime.now(UTC) + timedelta(minutes=1)
    with pytest.raises(LoginEtlError):
        upkeep.maintain(Settings.load(), older_than=timedelta(0), now=later)
    assert os.path.exists(in_flight_path)


def test_a_session_whose_lock_another_took_is_told_it_lost_it(database_url) -> None:
    # The lock's session lives on but no longer holds it (released behind its back,
    # as a pooler that swaps server sessions would); another writer took it since.
    # That other holder's lock must not pass for this session's.
    with psycopg.connect(database_url, autocommit=True) as mine:
        writer.wait_for_lock(mine)
        writer.still_locked(mine)
        mine.execute(named_query("lake_unlock"))
        with psycopg.connect(database_url, autocommit=True) as other:
            writer.wait_for_lock(other)
            writer.still_locked(other)
            with pytest.raises(LakeUnavailable, match="the writer lock was lost"):
                writer.still_locked(mine)


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_expiry_keeps_the_snapshot_that_holds_the_mark(lake_env, monkeypatch) -> None:
    # A pass commits and dies before its outbox delete; then another engine
    # commits (no mark in its summary); then maintain keeps only the newest.
    bodies = [json.dumps(event(i)) for i in range(5)]
    load_directly(lake_env, bodies, DAY, 0)
    crash_after_commit(lake_env, monkeypatch)
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 5
    with Table(lake_env) as table:
        mark = mark_of(table)
        foreign = table.scan().to_arrow().slice(0, 1)
        foreign = foreign.set_column(
            foreign.schema.get_field_index("create_date"),
            foreign.schema.field("create_date"),
            pa.array([(DAY + timedelta(days=3)).date()], foreign.schema.field("create_date").type),
        ).set_column(
            0,
            foreign.schema.field("message_id"),
            pa.array(["other-engine"], foreign.schema.field("message_id").type),
        )
        table.append(foreign)  # another engine's commit: no mark
    upkeep.maintain(Settings.load(), older_than=timedelta(0), retain_last=1)
    with Table(lake_env) as table:
        assert mark_of(table) == mark
    flush(lake_env)
    ids = [r["message_id"] for r in lake_records(lake_env)]
    assert len(ids) == len(set(ids)) == 6
