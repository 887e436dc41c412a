"""The lake's one door to pyiceberg, and to pyarrow where pyiceberg's formats need it.

No other module of the package imports pyiceberg: what the lake relies on is
this surface, and tests/integration/test_lake_iceberg.py checks each piece
of it against the installed pyiceberg (docs/lake.md, "Upgrading pyiceberg").

* errors: `translated` turns pyiceberg's, pyarrow's, SQLAlchemy's and
  psycopg's errors into ours;
* catalog and table: `open_catalog`, `load_or_create`, `close_catalog`; the
  schema vocabulary (`Schema`, `NestedField` and the field types),
  `identity_spec`, `arrow_schema`, `arrow_table`;
* snapshot properties: `append` commits rows with properties in the snapshot
  summary; `property_lineage` finds the newest ancestor holding one;
* planning from the manifests alone: `data_files`, with the row filters
  `is_in` and `any_lacks_prefix`;
* reading: `scan_batches` (a filtered scan of the table), `file_batches`
  (one data file, a bounded batch at a time); `with_column` for a change;
* writing data files ourselves and committing a file-level overwrite:
  `new_data_path`, `write_data_file`, `overwrite_files`, `delete_file`;
* expiry and orphans: `snapshot_times`, `ref_heads`, `expire_snapshots`,
  `referenced_files`, `unreferenced_files`, `delete_stored`.

Internals used (the reason pyiceberg's version is bounded above in
pyproject.toml): `FileFormatFactory` writes a Parquet file with Iceberg's
statistics, `DataFile.from_args` (which drops ``spec_id``: set again here),
and the file IO's `parse_location` / `fs_by_scheme` to list the table's files.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from login_etl import record, redact
from login_etl.errors import ConfigError, LakeUnavailable, LoginEtlError
from login_etl.lake import IDENTIFIER
from login_etl.record import Column

try:
    import pyarrow as pa
    import sqlalchemy.exc
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
    from pyiceberg.expressions import (
        AlwaysTrue,
        BooleanExpression,
        GreaterThanOrEqual,
        In,
        LessThan,
        Or,
    )
    from pyiceberg.manifest import DataFile
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.table import Table
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import (
        DateType,
        IntegerType,
        NestedField,
        PrimitiveType,
        StringType,
        TimestamptzType,
    )
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        "LOGIN_ETL_LAKE_WAREHOUSE is set but the lake's libraries are missing: "
        "pip install '.[lake]' from a checkout (the image has them)"
    ) from exc

__all__ = [
    "BooleanExpression",
    "DataFile",
    "DateType",
    "FileEntry",
    "IntegerType",
    "NestedField",
    "Schema",
    "StoredFile",
    "StringType",
    "Table",
    "TimestamptzType",
    "any_lacks_prefix",
    "append",
    "arrow_schema",
    "arrow_table",
    "close_catalog",
    "data_files",
    "delete_file",
    "delete_stored",
    "expire_snapshots",
    "file_batches",
    "identity_spec",
    "is_in",
    "load_or_create",
    "new_data_path",
    "open_catalog",
    "overwrite_files",
    "property_lineage",
    "ref_heads",
    "referenced_files",
    "scan_batches",
    "snapshot_times",
    "translated",
    "unreferenced_files",
    "with_column",
    "write_data_file",
]

# Words in a warehouse error that no retry can fix.
_CONFIG_WORDS = re.compile(
    r"NoSuchBucket|AccessDenied|Access Denied|InvalidAccessKeyId|SignatureDoesNotMatch|"
    r"InvalidBucketName|Forbidden|HTTP status 403|Permission denied",
    re.I,
)


# -- errors -----------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact.scrub(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn pyiceberg, pyarrow, SQLAlchemy and psycopg errors met while doing `what` into ours.

    A warehouse or catalog that does not answer, or a commit that lost a race,
    is `LakeUnavailable` (retryable); a missing bucket, refused credentials or
    missing catalog tables are `ConfigError`.
    """
    import psycopg

    from login_etl.postgres import translate

    try:
        yield
    except LoginEtlError:
        raise
    except CommitFailedException as exc:
        raise LakeUnavailable(f"lake {what}: another commit came first") from exc
    except ValidationException as exc:  # a file a rewrite replaces went meanwhile
        raise LakeUnavailable(f"lake {what}: the table changed meanwhile") from exc
    except NoSuchTableError as exc:
        raise LakeUnavailable(f"lake {what}: the table {IDENTIFIER} is gone") from exc
    except sqlalchemy.exc.ProgrammingError as exc:
        raise ConfigError(
            "the lake catalog's tables are missing: run `login-etl init-db` first"
        ) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise LakeUnavailable(f"lake catalog {what} failed: {_describe(exc)}") from exc
    except psycopg.Error as exc:
        raise translate(exc) from exc
    except PermissionError as exc:
        raise ConfigError(f"lake warehouse: permission denied ({what})") from exc
    except OSError as exc:
        if _CONFIG_WORDS.search(str(exc)):
            raise ConfigError(f"lake warehouse refused {what}: {_describe(exc)}") from exc
        raise LakeUnavailable(f"lake warehouse {what} failed: {_describe(exc)}") from exc


# -- catalog, table, schema ----------------------------------------------------------


def open_catalog(name: str, properties: dict[str, str]) -> SqlCatalog:
    """pyiceberg's SQL catalog `name` with these properties (``uri``, ``warehouse``, …)."""
    with translated("catalog"):
        return SqlCatalog(name, **properties)


def close_catalog(catalog: SqlCatalog) -> None:
    """Release the catalog's database connections."""
    catalog.engine.dispose()


def load_or_create(
    catalog: SqlCatalog,
    identifier: str,
    schema: Schema,
    spec: PartitionSpec,
    properties: dict[str, str],
) -> Table:
    """The table `identifier` as committed now; created, with its namespace, if missing."""
    with translated("table"):
        try:
            return catalog.load_table(identifier)
        except NoSuchTableError:
            catalog.create_namespace_if_not_exists(identifier.rpartition(".")[0])
            return catalog.create_table_if_not_exists(
                identifier, schema, partition_spec=spec, properties=properties
            )


def schema_of(columns: Sequence[Column]) -> Schema:
    """The Iceberg schema of the record's lake columns (`login_etl.record`), by their ids."""
    types: dict[str, PrimitiveType] = {
        "string": StringType(),
        "int": IntegerType(),
        "date": DateType(),
        "timestamptz": TimestamptzType(),
    }
    return Schema(
        *(
            NestedField(c.lake_id, c.name, types[c.lake_type], required=not c.nullable)
            for c in record.lake(columns)
        )
    )


def identity_spec(schema: Schema, column: str) -> PartitionSpec:
    """A partition spec on the values of one column, as they are."""
    source = schema.find_field(column).field_id
    field = PartitionField(
        source_id=source, field_id=1000, transform=IdentityTransform(), name=column
    )
    return PartitionSpec(field)


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of an Iceberg schema (the one `append` takes)."""
    return schema.as_arrow()


def arrow_table(columns: Sequence[Sequence[Any]], schema: pa.Schema) -> pa.Table:
    """An Arrow table in `schema` from one sequence of values per column, in its order."""
    return pa.Table.from_arrays(
        [pa.array(col, type=field.type) for col, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


# -- snapshot properties ------------------------------------------------------------


def append(table: Table, data: pa.Table, properties: dict[str, str]) -> None:
    """Commit `data` as one fast append, with `properties` in the snapshot summary."""
    with translated("append"):
        table.append(data, snapshot_properties=properties)


def property_lineage(table: Table, key: str) -> tuple[list[int], str | None]:
    """Walk back from the current snapshot to the newest one whose summary holds `key`.

    Returns the ids of the snapshots walked (that one last) and its value; with
    no such snapshot, every ancestor and None. Another engine's commits carry
    no properties of ours, so the newest snapshot may not be the one.
    """
    walked: list[int] = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        walked.append(snapshot.snapshot_id)
        value = snapshot.summary[key] if snapshot.summary is not None else None
        if value:
            return walked, str(value)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return walked, None


# -- planning and reading -----------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """A current data file, as the manifests describe it."""

    file: DataFile
    partition: Any  # the first partition field's value, as pyiceberg gives it
    has_deletes: bool  # delete files apply to it (only another engine makes them)
    current_spec: bool  # written under the table's default partition spec


def data_files(table: Table, row_filter: BooleanExpression | None = None) -> list[FileEntry]:
    """The current data files (those whose statistics may match `row_filter`), from the
    manifests alone: no data file is read."""
    if table.current_snapshot() is None:
        return []
    scan = table.scan(row_filter=row_filter or AlwaysTrue())
    with translated("plan"):
        tasks = list(scan.plan_files())
    spec = table.metadata.default_spec_id
    return [
        FileEntry(t.file, t.file.partition[0], bool(t.delete_files), t.file.spec_id == spec)
        for t in tasks
    ]


# pyiceberg's expressions take (term, literal) at run time; its types say otherwise.
def is_in(column: str, values: Iterable[str]) -> BooleanExpression:
    """Filter: records whose `column` is one of `values`."""
    return In(column, set(values))  # type: ignore[call-arg, arg-type]


def any_lacks_prefix(columns: Sequence[str], prefix: str) -> BooleanExpression:
    """Filter: records where any of `columns` does not start with `prefix`.

    Written as a range, below `prefix` or at or above the first string after
    all that start with it, so that planning skips a file whose bounds all
    start with `prefix`: pyiceberg's own NotStartsWith (0.12) never skips a
    file that records null counts, which is every file.
    """
    if not prefix:
        raise ValueError("an empty prefix: every value has it")
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    terms = [
        Or(LessThan(c, prefix), GreaterThanOrEqual(c, after))  # type: ignore[call-arg, arg-type]
        for c in columns
    ]
    return terms[0] if len(terms) == 1 else Or(*terms)


def scan_batches(
    table: Table, row_filter: BooleanExpression, columns: Sequence[str]
) -> Iterator[pa.RecordBatch]:
    """The table's records matching `row_filter`, these columns, a batch at a time."""
    if table.current_snapshot() is None:
        return iter(())
    scan = table.scan(row_filter=row_filter, selected_fields=tuple(columns))
    return iter(scan.to_arrow_batch_reader())


def file_batches(
    table: Table, source: DataFile, *, batch_bytes: int, max_rows: int, buffer_bytes: int
) -> Iterator[pa.RecordBatch]:
    """One data file's records in batches of about `batch_bytes` (at most `max_rows`).

    Reads go in pieces of `buffer_bytes` within a column chunk, so memory
    follows the batch, not the file.
    """
    import pyarrow.parquet as pq

    with translated("read"), table.io.new_input(source.file_path).open() as stream:
        reader = pq.ParquetFile(stream, buffer_size=buffer_bytes)
        meta = reader.metadata
        groups = [meta.row_group(n) for n in range(meta.num_row_groups)]
        # The widest row group's records (unpacked, uncompressed) set the batch's rows.
        widest = max((g.total_byte_size / g.num_rows for g in groups if g.num_rows), default=1.0)
        rows = max(1, min(max_rows, int(batch_bytes / max(widest, 1.0))))
        yield from reader.iter_batches(batch_size=rows, use_threads=False)


def with_column(batch: pa.RecordBatch, name: str, values: list[Any]) -> pa.RecordBatch:
    """`batch` with column `name` replaced by `values` (same type and length)."""
    index = batch.schema.get_field_index(name)
    spec = batch.schema.field(index)
    return batch.set_column(index, spec, pa.array(values, type=spec.type))


# -- writing and committing files ------------------------------------------------------


def new_data_path(table: Table, partition: Any) -> str:
    """A fresh data file location in the partition whose (first and only) value is `partition`."""
    from pyiceberg.partitioning import PartitionFieldValue, PartitionKey

    spec = table.spec()
    key = PartitionKey([PartitionFieldValue(spec.fields[0], partition)], spec, table.schema())
    name = f"00000-0-{uuid.uuid4()}.parquet"
    return table.location_provider().new_data_location(name, partition_key=key)


def write_data_file(
    table: Table,
    path: str,
    partition: Any,
    batches: Iterable[pa.RecordBatch],
    *,
    row_group_bytes: int,
) -> DataFile:
    """Write `batches` as one Parquet data file at `path`, not committed; its DataFile.

    `partition` is the partition record of the files the batches came from.
    Each batch is cast to the table's schema (names, order and types checked)
    and at most `row_group_bytes` of Arrow data are buffered before a row
    group is written. A file the caller does not commit is its to delete.
    """
    from pyiceberg.io.fileformat import FileFormatFactory
    from pyiceberg.io.pyarrow import schema_to_pyarrow
    from pyiceberg.manifest import DataFileContent, FileFormat

    schema = table.schema()
    # The table's Arrow schema with Iceberg's field ids, as pyiceberg writes it.
    target = schema_to_pyarrow(schema, include_field_ids=True)
    model = FileFormatFactory.get(FileFormat.PARQUET)
    records = size = 0
    buffered: list[pa.RecordBatch] = []
    with translated("write"):
        with model.create_writer(
            table.io.new_output(path), schema, table.metadata.properties
        ) as out:
            for batch in batches:
                batch = batch.cast(target)
                buffered.append(batch)
                size += batch.nbytes
                records += batch.num_rows
                if size >= row_group_bytes:
                    out.write(pa.Table.from_batches(buffered, target))
                    buffered, size = [], 0
            if buffered or not records:
                out.write(pa.Table.from_batches(buffered, target))
        statistics = out.result()
        file_size = len(table.io.new_input(path))
    spec_id = table.metadata.default_spec_id
    data_file = DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=partition,
        file_size_in_bytes=file_size,
        sort_order_id=None,
        spec_id=spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
    # from_args drops it, and a later overwrite that replaces this file needs it.
    data_file.spec_id = spec_id
    return data_file


def overwrite_files(
    table: Table,
    old: Sequence[DataFile],
    new: Sequence[DataFile],
    properties: dict[str, str],
    what: str = "overwrite",
) -> None:
    """Commit one snapshot that deletes exactly `old` and adds `new` (no row filter).

    It is checked against the snapshot it was built on: if anyone committed
    meanwhile, or a file of `old` is gone, nothing changes (`LakeUnavailable`).
    """
    with translated(what), table.transaction() as tx:
        with tx.update_snapshot(snapshot_properties=properties).overwrite() as files:
            for f in old:
                files.delete_data_file(f)
            for f in new:
                files.append_data_file(f)


def delete_file(table: Table, location: str) -> None:
    """Delete a file of the table's storage; one already gone is fine."""
    with translated("delete"):
        try:
            table.io.delete(location)
        except FileNotFoundError:
            pass


# -- expiry and orphans ---------------------------------------------------------------


def snapshot_times(table: Table) -> dict[int, int]:
    """Every snapshot the metadata holds: id → commit time in ms since the epoch."""
    return {s.snapshot_id: s.timestamp_ms for s in table.metadata.snapshots}


def ref_heads(table: Table) -> set[int]:
    """The snapshots branches and tags point at (expiry must keep them)."""
    return {ref.snapshot_id for ref in table.metadata.refs.values()}


def expire_snapshots(table: Table, ids: Sequence[int]) -> None:
    """Remove these snapshots from the metadata (their files stay: see `referenced_files`)."""
    with translated("expire"):
        table.maintenance.expire_snapshots().by_ids(list(ids)).commit()
        table.refresh()


def _snapshot_files(table: Table, snapshot: Any, cache: dict[str, list[str]]) -> set[str]:
    """Every file a snapshot references: its manifest list, manifests and data files."""
    io = table.io
    files = {snapshot.manifest_list}
    for manifest in snapshot.manifests(io):
        files.add(manifest.manifest_path)
        if manifest.manifest_path not in cache:
            entries = manifest.fetch_manifest_entry(io, discard_deleted=True)
            cache[manifest.manifest_path] = [e.data_file.file_path for e in entries]
        files.update(cache[manifest.manifest_path])
    return files


def referenced_files(table: Table, cache: dict[str, list[str]]) -> set[str]:
    """Every file the table's metadata references: metadata files and every snapshot's.

    `cache` keeps manifests' entries between calls (a manifest never changes).
    """
    files: set[str] = set()
    with translated("read"):
        for snapshot in table.metadata.snapshots:
            files |= _snapshot_files(table, snapshot, cache)
    files.add(table.metadata_location)
    files.update(entry.metadata_file for entry in table.metadata.metadata_log)
    return files


@dataclass(frozen=True)
class StoredFile:
    """A file under the table's location, as the storage lists it."""

    path: str  # the storage's own path (no scheme)
    mtime: datetime | None


def unreferenced_files(table: Table, referenced: set[str]) -> list[StoredFile]:
    """Files under the table's location that are not in `referenced` (see `referenced_files`)."""
    from pyarrow.fs import FileSelector, FileType

    io: Any = table.io
    scheme, netloc, root = io.parse_location(table.location())
    fs = io.fs_by_scheme(scheme, netloc)
    known = {io.parse_location(p)[2] for p in referenced}
    with translated("list"):
        infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    return [
        StoredFile(info.path, info.mtime)
        for info in infos
        if info.type == FileType.File and info.path not in known
    ]


def delete_stored(table: Table, stored: StoredFile) -> None:
    """Delete a file `unreferenced_files` listed."""
    io: Any = table.io
    scheme, netloc, _ = io.parse_location(table.location())
    with translated("delete"):
        io.fs_by_scheme(scheme, netloc).delete_file(stored.path)
