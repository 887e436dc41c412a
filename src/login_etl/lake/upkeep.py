"""Keeping the lake: rekey after a key rotation, and maintenance.

Both hold the writer lock, so no append interleaves, and every commit they
make carries the outbox mark forward in its snapshot summary.

`rekey` rewrites the masks of outbox rows and of every partition holding a
mask not made by the primary key (an Iceberg overwrite per partition).

`maintain` is what ``login-etl lake maintain`` runs, in this order:

1. compaction: a partition with more than one data file is rewritten as one
   (each writer pass adds a file per date it touches);
2. snapshot expiry: snapshots older than ``older_than`` go, but the newest
   ``retain_last`` always stay; files only they referenced are deleted;
3. orphan removal: files under the table's location that no snapshot or
   metadata file references, and older than ``older_than`` (a pass killed
   mid-write leaves such files; younger ones may belong to a running pass).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl.errors import MaskingError
from login_etl.lake.table import (
    MARK_KEY,
    Lake,
    mark_of,
    on_day,
    partitions,
    stale_masks,
    translated,
)
from login_etl.lake.writer import unlock, wait_for_lock
from login_etl.masking import Masker
from login_etl.postgres import connect
from login_etl.rekey import remask, remask_pages

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.io import FileIO
    from pyiceberg.table import Table

    from login_etl.config import Settings

log = logging.getLogger(__name__)


@dataclass
class LakeRekeyResult:
    """What a lake rekey rewrote."""

    outbox: int = 0
    rows: int = 0
    partitions: int = 0
    unreadable: int = 0


@dataclass
class MaintainResult:
    """What maintenance did, and the data files left."""

    compacted: int = 0
    expired: int = 0
    deleted_files: int = 0
    data_files: int = 0
    data_bytes: int = 0


def _overwrite_day(table: Table, day: date, data: pa.Table, operation: str) -> None:
    props = {MARK_KEY: str(mark_of(table)), "login-etl.operation": operation}
    with translated(operation):
        table.overwrite(data, overwrite_filter=on_day(day), snapshot_properties=props)


def _read_day(table: Table, day: date) -> pa.Table:
    with translated("read"):
        return table.scan(row_filter=on_day(day)).to_arrow()


# -- rekey ------------------------------------------------------------------------


def _rekey_outbox(conn: psycopg.Connection[Any], masker: Masker, result: LakeRekeyResult) -> None:
    rewritten, unreadable = remask_pages(conn, masker, "lake_rekey", after="0")
    result.outbox += rewritten
    result.unreadable += unreadable


def _stale_days(table: Table, masker: Masker) -> list[date]:
    if table.current_snapshot() is None:
        return []
    with translated("read"):
        found = table.scan(
            row_filter=stale_masks(masker.key_id), selected_fields=("create_date",)
        ).to_arrow()
    return sorted(set(found.column("create_date").to_pylist()))


def _rekey_columns(data: pa.Table, masker: Masker, result: LakeRekeyResult) -> tuple[pa.Table, int]:
    """`data` with both mask columns under the primary key, and how many records changed."""
    import pyarrow as pa

    changed = [False] * data.num_rows
    for field in ("ip", "device_id"):
        name = f"masked_{field}"
        out = []
        for n, mask in enumerate(data.column(name).to_pylist()):
            try:
                new = remask(masker, field, mask) or mask
            except MaskingError:
                result.unreadable += 1
                new = mask  # made by no known key: left as is, and counted
            changed[n] = changed[n] or new != mask
            out.append(new)
        index = data.schema.get_field_index(name)
        spec = data.schema.field(index)  # pyiceberg reads strings as large_string
        data = data.set_column(index, spec, pa.array(out, type=spec.type))
    return data, sum(changed)


def rekey(settings: Settings, masker: Masker) -> LakeRekeyResult:
    """Rewrite the masks of the outbox and the lake made by older keys."""
    result = LakeRekeyResult()
    lake = Lake.from_settings(settings)
    try:
        with (
            connect(settings.database_url) as lock,
            connect(settings.database_url) as conn,
            translated("rekey"),
        ):
            lock.autocommit = True
            wait_for_lock(lock)
            try:
                _rekey_outbox(conn, masker, result)
                table = lake.table()
                for day in _stale_days(table, masker):
                    data, changed = _rekey_columns(_read_day(table, day), masker, result)
                    if changed:
                        _overwrite_day(table, day, data, "rekey")
                        result.rows += changed
                        result.partitions += 1
            finally:
                unlock(lock)
    finally:
        lake.close()
    return result


# -- maintenance ------------------------------------------------------------------


def _manifest_files(io: FileIO, snapshot: Any, cache: dict[str, list[str]]) -> set[str]:
    """Every file a snapshot references: its manifest list, manifests and data files."""
    files = {snapshot.manifest_list}
    for manifest in snapshot.manifests(io):
        files.add(manifest.manifest_path)
        if manifest.manifest_path not in cache:
            entries = manifest.fetch_manifest_entry(io, discard_deleted=True)
            cache[manifest.manifest_path] = [e.data_file.file_path for e in entries]
        files.update(cache[manifest.manifest_path])
    return files


def _referenced(table: Table, cache: dict[str, list[str]]) -> set[str]:
    files: set[str] = set()
    for snapshot in table.metadata.snapshots:
        files |= _manifest_files(table.io, snapshot, cache)
    files.add(table.metadata_location)
    files.update(entry.metadata_file for entry in table.metadata.metadata_log)
    return files


def _compact(table: Table) -> int:
    """Rewrite each partition holding several data files as one; return how many."""
    done = 0
    for day, files in sorted(partitions(table).items()):
        if len(files) > 1:
            _overwrite_day(table, day, _read_day(table, day), "compact")
            done += 1
    return done


def _expire(
    table: Table, cutoff: datetime, retain_last: int, cache: dict[str, list[str]]
) -> tuple[int, int]:
    """Expire old snapshots (keeping the newest `retain_last`); delete files only they held.

    Returns (snapshots expired, files deleted).
    """
    newest = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)[-retain_last:]
    keep = {s.snapshot_id for s in newest}
    current = table.current_snapshot()
    if current is not None:
        keep.add(current.snapshot_id)
    limit = cutoff.timestamp() * 1000
    old = [
        s.snapshot_id
        for s in table.metadata.snapshots
        if s.timestamp_ms < limit and s.snapshot_id not in keep
    ]
    if not old:
        return 0, 0
    before = _referenced(table, cache)
    with translated("expire"):
        table.maintenance.expire_snapshots().by_ids(old).commit()
        table.refresh()
    gone = before - _referenced(table, cache)
    for path in gone:
        _delete(table.io, path)
    return len(old), len(gone)


def _delete(io: FileIO, path: str) -> None:
    with translated("delete"):
        try:
            io.delete(path)
        except FileNotFoundError:
            pass


def _orphans(table: Table, cutoff: datetime, cache: dict[str, list[str]]) -> int:
    """Delete files under the table's location that nothing references, older than `cutoff`."""
    from pyarrow.fs import FileSelector, FileType

    io: Any = table.io
    scheme, netloc, root = io.parse_location(table.location())
    fs = io.fs_by_scheme(scheme, netloc)
    referenced = {io.parse_location(p)[2] for p in _referenced(table, cache)}
    deleted = 0
    with translated("list"):
        infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    for info in infos:
        if info.type != FileType.File or info.path in referenced:
            continue
        mtime = info.mtime
        if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or UTC) >= cutoff:
            continue
        with translated("delete"):
            fs.delete_file(info.path)
        deleted += 1
    return deleted


def maintain(
    settings: Settings,
    *,
    older_than: timedelta = timedelta(days=1),
    retain_last: int = 5,
    now: datetime | None = None,
) -> MaintainResult:
    """Compact, expire snapshots older than `older_than`, remove old orphan files."""
    result = MaintainResult()
    lake = Lake.from_settings(settings)
    cache: dict[str, list[str]] = {}
    try:
        with connect(settings.database_url) as lock, translated("maintain"):
            lock.autocommit = True
            wait_for_lock(lock)
            try:
                table = lake.table()
                result.compacted = _compact(table)
                # Measured after compaction: with no age at all, its own
                # rewrites expire at once and the files they replaced go now.
                cutoff = (now or datetime.now(UTC)) - older_than
                result.expired, result.deleted_files = _expire(table, cutoff, retain_last, cache)
                result.deleted_files += _orphans(table, cutoff, cache)
                files = [f for day in partitions(table).values() for f in day]
                result.data_files = len(files)
                result.data_bytes = sum(f.file_size_in_bytes for f in files)
            finally:
                unlock(lock)
    finally:
        lake.close()
    log.info("lake maintained", extra={"fields": vars(result)})
    return result
