"""Rewriting the lake's data files a bounded piece at a time: compaction's and rekey's tools.

Nothing here holds a partition in memory. A rewrite streams its source files
a batch at a time (`READ_BATCH_BYTES`) into one new Parquet file, buffering at
most a row group (`ROW_GROUP_BYTES` of Arrow data) before it is encoded and
written out; the memory it needs is the same for a day of a thousand records
and a day of a hundred million. `replace` then commits one snapshot that
deletes exactly the source files and adds the new ones (a file-level
overwrite: no row filter, so no other file of the partition is read), with
the table's outbox mark carried forward in the summary.

`bins` (pure) chooses what compaction merges: first-fit decreasing of the
small files into bins no bigger than the target.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from login_etl.errors import LoginEtlError
from login_etl.lake import iceberg
from login_etl.lake.table import MARK_KEY, mark_of
from login_etl.lake.table import day as day_of

if TYPE_CHECKING:
    import pyarrow as pa

    from login_etl.lake.iceberg import DataFile, Table

log = logging.getLogger(__name__)

# A file at least this share of the target is big enough: rewriting it to
# absorb a few small ones would copy a lot to gain little (Iceberg's own
# rewrite_data_files leaves files above 75% of its target alone too).
BIG_ENOUGH = 0.75
# A batch read from a source file holds about this much data, however wide
# its records (`extra` may reach 64 KiB), and at most this many rows.
READ_BATCH_BYTES = 4 << 20
READ_BATCH_ROWS = 65_536
# Arrow bytes buffered before they are written as one row group: the larger
# part of a rewrite's memory, and large enough for readers to scan well
# (some 290,000 records, 20 MB of Parquet).
ROW_GROUP_BYTES = 64 << 20
# Reads within a column chunk go in pieces of this size, not the whole chunk.
READ_BUFFER_BYTES = 1 << 20


class Sized(Protocol):
    """What `bins` needs of a data file."""

    @property
    def file_size_in_bytes(self) -> int: ...


F = TypeVar("F", bound=Sized)


def bins(files: Iterable[F], target: int) -> list[list[F]]:
    """Groups of small files to merge, each group's total at most `target` bytes.

    Files of at least `BIG_ENOUGH` × `target` stay out; the rest are packed
    first-fit decreasing. A group of one file would only be copied, so only
    groups of two or more are returned. First-fit decreasing leaves no two
    groups that would fit in one, so the files a rewrite makes (about the sum
    of their sources) are not merged again by the next run.
    """
    small = sorted(
        (f for f in files if f.file_size_in_bytes < BIG_ENOUGH * target),
        key=lambda f: f.file_size_in_bytes,
        reverse=True,
    )
    packed: list[tuple[int, list[F]]] = []
    for f in small:
        for n, (size, group) in enumerate(packed):
            if size + f.file_size_in_bytes <= target:
                group.append(f)
                packed[n] = (size + f.file_size_in_bytes, group)
                break
        else:
            packed.append((f.file_size_in_bytes, [f]))
    return [group for _, group in packed if len(group) > 1]


def rewritable(table: Table, row_filter: Any = None) -> dict[date, list[DataFile]]:
    """The current data files by create_date that a rewrite may replace (manifests alone).

    With `row_filter`, only files whose statistics say they may hold a
    matching record. A file with delete files attached (only another engine
    makes them) or of an older partition spec is left alone: rewriting it as
    it is stored would bring back rows deleted, or put it in the wrong place.
    """
    found: dict[date, list[DataFile]] = {}
    skipped = 0
    for entry in iceberg.data_files(table, row_filter):
        if entry.has_deletes or not entry.current_spec:
            skipped += 1
            continue
        found.setdefault(day_of(entry.partition), []).append(entry.file)
    if skipped:
        log.warning(
            "lake: files with delete files or an older partition spec are not rewritten",
            extra={"fields": {"files": skipped}},
        )
    return found


@dataclass(frozen=True)
class Rewritten:
    """One new data file, and how many of its records a change altered."""

    file: DataFile
    records: int
    changed: int


Change = Callable[["pa.RecordBatch"], "tuple[pa.RecordBatch, int]"]


def rewrite(
    table: Table, day: date, sources: Sequence[DataFile], change: Change | None = None
) -> Rewritten:
    """Stream the records of `sources`, files of partition `day`, into one new data file.

    `change`, if given, maps each batch to (new batch, records it altered);
    it must keep the batch's rows and columns. The file is not committed:
    `replace` does that.
    """
    partition = sources[0].partition
    if any(s.partition != partition for s in sources):
        raise LoginEtlError(f"lake: the files to rewrite are not all of partition {day}")
    changed = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal changed
        for source in sources:
            for batch in iceberg.file_batches(
                table,
                source,
                batch_bytes=READ_BATCH_BYTES,
                max_rows=READ_BATCH_ROWS,
                buffer_bytes=READ_BUFFER_BYTES,
            ):
                if change is not None:
                    batch, altered = change(batch)
                    changed += altered
                yield batch

    path = iceberg.new_data_path(table, day)
    try:
        data_file = iceberg.write_data_file(
            table, path, partition, batches(), row_group_bytes=ROW_GROUP_BYTES
        )
        expected = sum(s.record_count for s in sources)
        if data_file.record_count != expected:
            raise LoginEtlError(
                f"lake: read {data_file.record_count} records of {day}, not {expected}"
            )
    except BaseException:
        with contextlib.suppress(Exception):  # else `lake maintain` removes it as an orphan
            iceberg.delete_file(table, path)
        raise
    return Rewritten(data_file, data_file.record_count, changed)


def discard(table: Table, files: Iterable[DataFile]) -> None:
    """Delete files written but never committed (no snapshot references them)."""
    for f in files:
        iceberg.delete_file(table, f.file_path)


def replace(table: Table, old: Sequence[DataFile], new: Sequence[DataFile], operation: str) -> None:
    """Commit one snapshot that deletes exactly `old` and adds `new`, the mark kept.

    It is checked against the snapshot it was built on: if anyone committed
    meanwhile, or a file of `old` is gone, nothing changes and the error is
    retryable (the next run plans again).
    """
    props = {MARK_KEY: str(mark_of(table)), "login-etl.operation": operation}
    iceberg.overwrite_files(table, old, new, props, operation)
