"""Keeping the lake: rekey after a key rotation, and maintenance.

Both hold the writer lock, so no append interleaves, and every commit they
make carries the outbox mark forward in its snapshot summary. Both rewrite
data files a bounded piece at a time (`login_etl.lake.rewrite`): their
memory does not grow with the size of a partition.

`rekey` rewrites the masks of outbox rows, and each data file whose
statistics say it may hold a mask not made by the primary key, one file at
a time (a snapshot per partition, replacing exactly those files).

`maintain` is what ``login-etl lake maintain`` runs, in this order:

1. compaction: in each partition, the files smaller than ¾ of the target
   size are packed into bins of at most the target, and each bin of two or
   more is rewritten as one file (a snapshot per partition, replacing exactly
   the bins' files); a partition at one file, or whose files are all big
   enough, is left alone;
2. snapshot expiry: snapshots older than ``older_than`` go, but the newest
   ``retain_last`` always stay; files only they referenced are deleted;
3. orphan removal: files under the table's location that no snapshot or
   metadata file references, and older than ``older_than`` (a pass killed
   mid-write leaves such files; younger ones may belong to a running pass).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl.errors import MaskingError
from login_etl.lake import TARGET_FILE_MB, iceberg
from login_etl.lake.iceberg import translated
from login_etl.lake.rewrite import (
    Change,
    Rewritten,
    bins,
    discard,
    replace,
    rewritable,
    rewrite,
)
from login_etl.lake.table import MARK_KEY, Lake, partitions, stale_masks
from login_etl.lake.writer import still_locked, writer_lock
from login_etl.masking import Masker
from login_etl.postgres import connect
from login_etl.rekey import remask, remask_pages

if TYPE_CHECKING:
    import pyarrow as pa

    from login_etl.config import Settings
    from login_etl.lake.iceberg import DataFile, Table

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

    compacted: int = 0  # partitions
    merged: int = 0  # small files rewritten ...
    written: int = 0  # ... as this many
    expired: int = 0
    deleted_files: int = 0
    data_files: int = 0
    data_bytes: int = 0


@contextmanager
def _unless_committed(table: Table, new: list[Rewritten]) -> Iterator[None]:
    """Delete the files in `new` if the block fails: no commit references them yet.

    Only around the writing: a commit that fails may still have landed (the
    catalog's answer lost), so its files are left to orphan removal.
    """
    try:
        yield
    except BaseException:
        discard(table, [n.file for n in new])
        raise


# -- rekey ------------------------------------------------------------------------


def _rekey_outbox(conn: psycopg.Connection[Any], masker: Masker, result: LakeRekeyResult) -> None:
    rewritten, unreadable = remask_pages(conn, masker, "lake_rekey", after="0")
    result.outbox += rewritten
    result.unreadable += unreadable


def _remask(masker: Masker, result: LakeRekeyResult) -> Change:
    """A batch change: both mask columns under the primary key, and how many records changed."""

    def change(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        changed = [False] * batch.num_rows
        for field in ("ip", "device_id"):
            name = f"masked_{field}"
            out = []
            for n, mask in enumerate(batch.column(name).to_pylist()):
                try:
                    new = remask(masker, field, mask) or mask
                except MaskingError:
                    result.unreadable += 1
                    new = mask  # made by no known key: left as is, and counted
                changed[n] = changed[n] or new != mask
                out.append(new)
            batch = iceberg.with_column(batch, name, out)
        return batch, sum(changed)

    return change


def _rekey_files(table: Table, masker: Masker, result: LakeRekeyResult) -> None:
    """Rewrite each file that may hold a stale mask, a file at a time; a snapshot per partition."""
    change = _remask(masker, result)
    for day, files in sorted(rewritable(table, stale_masks(masker.key_id)).items()):
        old: list[DataFile] = []
        new: list[Rewritten] = []
        with _unless_committed(table, new):
            for source in files:
                done = rewrite(table, day, [source], change)
                if done.changed:
                    old.append(source)
                    new.append(done)
                else:  # every mask current already, or made by no known key
                    discard(table, [done.file])
        if old:
            replace(table, old, [n.file for n in new], "rekey")
            result.rows += sum(n.changed for n in new)
            result.partitions += 1
            log.info(
                "lake: rekeyed",
                extra={"fields": {"date": str(day), "files": len(old)}},
            )


def rekey(settings: Settings, masker: Masker) -> LakeRekeyResult:
    """Rewrite the masks of the outbox and the lake made by older keys."""
    result = LakeRekeyResult()
    lake = Lake.from_settings(settings)
    try:
        with (
            translated("rekey"),
            writer_lock(settings.database_url),
            connect(settings.database_url) as conn,
        ):
            _rekey_outbox(conn, masker, result)
            _rekey_files(lake.table(), masker, result)
    finally:
        lake.close()
    return result


# -- maintenance ------------------------------------------------------------------


def _compact(table: Table, target: int, result: MaintainResult) -> None:
    """Merge each partition's small files in bins of at most `target` bytes (see `bins`).

    A partition goes round again while its new files still leave a bin to
    merge (a rewrite can come out smaller than its sources), so the next run
    finds nothing to do; every round has fewer files than the last.
    """
    for day, files in sorted(rewritable(table).items()):
        rounds = 0
        while groups := bins(files, target):
            new: list[Rewritten] = []
            with _unless_committed(table, new):
                for group in groups:
                    new.append(rewrite(table, day, group))
            old = [f for group in groups for f in group]
            replace(table, old, [n.file for n in new], "compact")
            gone = {f.file_path for f in old}
            files = [f for f in files if f.file_path not in gone] + [n.file for n in new]
            result.merged += len(old)
            result.written += len(new)
            rounds += 1
            log.info(
                "lake: compacted",
                extra={"fields": {"date": str(day), "files": len(old), "into": len(new)}},
            )
        if rounds:
            result.compacted += 1


def _expire(
    table: Table, cutoff: datetime, retain_last: int, cache: dict[str, list[str]]
) -> tuple[int, int]:
    """Expire old snapshots (keeping the newest `retain_last`); delete files only they held.

    Returns (snapshots expired, files deleted).
    """
    times = iceberg.snapshot_times(table)
    keep = set(sorted(times, key=times.__getitem__)[-retain_last:])
    # `mark_of` walks back from the current snapshot (kept) to the newest
    # that holds the outbox mark (another engine's commits carry none): that
    # chain stays, or the mark is lost and rows a crashed pass left in the
    # outbox go twice.
    keep.update(iceberg.property_lineage(table, MARK_KEY)[0])
    # A branch's or tag's head (another engine's tag for time travel, say) is
    # protected: pyiceberg refuses to expire it, and its files must stay.
    keep.update(iceberg.ref_heads(table))
    limit = cutoff.timestamp() * 1000
    old = [i for i, ms in times.items() if ms < limit and i not in keep]
    if not old:
        return 0, 0
    before = iceberg.referenced_files(table, cache)
    iceberg.expire_snapshots(table, old)
    gone = before - iceberg.referenced_files(table, cache)
    for path in gone:
        iceberg.delete_file(table, path)
    return len(old), len(gone)


def _orphans(table: Table, cutoff: datetime, cache: dict[str, list[str]]) -> int:
    """Delete files under the table's location that nothing references, older than `cutoff`."""
    deleted = 0
    for stored in iceberg.unreferenced_files(table, iceberg.referenced_files(table, cache)):
        mtime = stored.mtime
        if mtime is not None and mtime.replace(tzinfo=mtime.tzinfo or UTC) >= cutoff:
            continue
        iceberg.delete_stored(table, stored)
        deleted += 1
    return deleted


def maintain(
    settings: Settings,
    *,
    older_than: timedelta = timedelta(days=1),
    retain_last: int = 5,
    target_file_mb: float = TARGET_FILE_MB,
    now: datetime | None = None,
) -> MaintainResult:
    """Compact small files towards `target_file_mb`, expire snapshots older than
    `older_than`, remove old orphan files."""
    result = MaintainResult()
    lake = Lake.from_settings(settings)
    cache: dict[str, list[str]] = {}
    try:
        with translated("maintain"), writer_lock(settings.database_url) as lock:
            table = lake.table()
            _compact(table, int(target_file_mb * (1 << 20)), result)
            # Measured after compaction: with no age at all, its own
            # rewrites expire at once and the files they replaced go now.
            cutoff = (now or datetime.now(UTC)) - older_than
            result.expired, result.deleted_files = _expire(table, cutoff, retain_last, cache)
            # Orphan removal is safe only while writers are kept out: a
            # file written by one that got in would look like an orphan.
            # Checked after the cutoff: a writer let in later writes
            # files younger than it, which stay.
            still_locked(lock)
            result.deleted_files += _orphans(table, cutoff, cache)
            files = [f for day in partitions(table).values() for f in day]
            result.data_files = len(files)
            result.data_bytes = sum(f.file_size_in_bytes for f in files)
    finally:
        lake.close()
    log.info("lake maintained", extra={"fields": vars(result)})
    return result
