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
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from login_etl.errors import LoginEtlError
from login_etl.lake.table import MARK_KEY, mark_of, translated
from login_etl.lake.table import day as day_of

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

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
    from pyiceberg.expressions import AlwaysTrue

    found: dict[date, list[DataFile]] = {}
    if table.current_snapshot() is None:
        return found
    skipped = 0
    scan = table.scan(row_filter=row_filter or AlwaysTrue(), selected_fields=("create_date",))
    with translated("plan"):
        tasks = list(scan.plan_files())
    for task in tasks:
        if task.delete_files or task.file.spec_id != table.metadata.default_spec_id:
            skipped += 1
            continue
        found.setdefault(day_of(task.file.partition[0]), []).append(task.file)
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


def _batches(table: Table, source: DataFile) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with translated("read"), table.io.new_input(source.file_path).open() as stream:
        reader = pq.ParquetFile(stream, buffer_size=READ_BUFFER_BYTES)
        meta = reader.metadata
        groups = [meta.row_group(n) for n in range(meta.num_row_groups)]
        # The widest row group's records (unpacked, uncompressed) set the batch's rows.
        widest = max((g.total_byte_size / g.num_rows for g in groups if g.num_rows), default=1.0)
        rows = max(1, min(READ_BATCH_ROWS, int(READ_BATCH_BYTES / max(widest, 1.0))))
        yield from reader.iter_batches(batch_size=rows, use_threads=False)


def _location(table: Table, day: date) -> str:
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

    spec = table.spec()
    key = PartitionKey([PartitionFieldValue(spec.fields[0], day)], spec, table.schema())
    name = f"00000-0-{uuid.uuid4()}.parquet"
    return table.location_provider().new_data_location(name, partition_key=key)


def _write(
    table: Table, path: str, sources: Sequence[DataFile], change: Change | None
) -> tuple[int, int, Any]:
    """Stream `sources` into a new Parquet file at `path`: (records, changed, statistics)."""
    import pyarrow as pa
    from pyiceberg.io.fileformat import FileFormatFactory
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    from pyiceberg.manifest import FileFormat

    schema = table.schema()
    # The table's Arrow schema with Iceberg's field ids, as pyiceberg writes
    # it; the cast checks each batch against it (names, order and types).
    arrow_schema = schema_to_pyarrow(schema, include_field_ids=True)
    model = FileFormatFactory.get(FileFormat.PARQUET)
    records = changed = size = 0
    buffered: list[pa.RecordBatch] = []
    with model.create_writer(table.io.new_output(path), schema, table.metadata.properties) as out:
        for source in sources:
            for batch in _batches(table, source):
                if change is not None:
                    batch, altered = change(batch)
                    changed += altered
                batch = batch.cast(arrow_schema)
                buffered.append(batch)
                size += batch.nbytes
                records += batch.num_rows
                if size >= ROW_GROUP_BYTES:
                    out.write(pa.Table.from_batches(buffered, arrow_schema))
                    buffered, size = [], 0
        if buffered or not records:
            out.write(pa.Table.from_batches(buffered, arrow_schema))
    return records, changed, out.result()


def rewrite(
    table: Table, day: date, sources: Sequence[DataFile], change: Change | None = None
) -> Rewritten:
    """Stream the records of `sources`, files of partition `day`, into one new data file.

    `change`, if given, maps each batch to (new batch, records it altered);
    it must keep the batch's rows and columns. The file is not committed:
    `replace` does that.
    """
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    partition = sources[0].partition
    if any(s.partition != partition for s in sources):
        raise LoginEtlError(f"lake: the files to rewrite are not all of partition {day}")
    path = _location(table, day)
    try:
        with translated("write"):
            records, changed, statistics = _write(table, path, sources, change)
            expected = sum(s.record_count for s in sources)
            if records != expected:
                raise LoginEtlError(f"lake: read {records} records of {day}, not {expected}")
            size = len(table.io.new_input(path))
    except BaseException:
        with contextlib.suppress(Exception):  # else `lake maintain` removes it as an orphan
            table.io.delete(path)
        raise
    data_file = DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=partition,
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=table.metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
    # from_args drops it, and a later rewrite that replaces this file needs it.
    data_file.spec_id = table.metadata.default_spec_id
    return Rewritten(data_file, records, changed)


def discard(table: Table, files: Iterable[DataFile]) -> None:
    """Delete files written but never committed (no snapshot references them)."""
    for f in files:
        with translated("delete"):
            try:
                table.io.delete(f.file_path)
            except FileNotFoundError:
                pass


def replace(table: Table, old: Sequence[DataFile], new: Sequence[DataFile], operation: str) -> None:
    """Commit one snapshot that deletes exactly `old` and adds `new`, the mark kept.

    It is checked against the snapshot it was built on: if anyone committed
    meanwhile, or a file of `old` is gone, nothing changes and the error is
    retryable (the next run plans again).
    """
    props: dict[str, Any] = {
        MARK_KEY: str(mark_of(table)),
        "login-etl.operation": operation,
    }
    with translated(operation), table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=props).overwrite() as files:
            for f in old:
                files.delete_data_file(f)
            for f in new:
                files.append_data_file(f)
