"""Rebuild `user_logins` rows from the lake, one transaction per run.

`user_logins` has no message id, so the unit of idempotency is the
create_date: a backfill deletes every row of the chosen dates and inserts
the lake's records for them, so running it twice gives the same table. The
lake's records are the table's current snapshot plus the outbox rows above
its mark (loaded, not appended yet), so a backfill never loses a row that
waits for the writer.

Consistency while workers keep loading: the writer lock keeps flushes out
for the duration, and the transaction is REPEATABLE READ, so its delete and
its outbox read see one snapshot: a row committed after it began is neither
deleted nor inserted, it simply stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl import record
from login_etl.errors import ConfigError
from login_etl.lake import iceberg
from login_etl.lake.iceberg import translated
from login_etl.lake.table import Lake, mark_of, on_days, partitions
from login_etl.lake.writer import writer_lock
from login_etl.postgres import connect
from login_etl.sqlfiles import query, statement

if TYPE_CHECKING:
    import pyarrow as pa

    from login_etl.config import Settings
    from login_etl.lake.iceberg import Table

_TABLE = record.user_logins()
_USER_LOGINS = record.names(_TABLE)
_COPY_TYPES = [c.copy_type for c in _TABLE]


@dataclass
class BackfillResult:
    """What a backfill replaced."""

    dates: list[date] = field(default_factory=list)
    deleted: int = 0
    from_lake: int = 0
    from_outbox: int = 0
    seconds: float = 0.0

    @property
    def inserted(self) -> int:
        """Rows inserted in all."""
        return self.from_lake + self.from_outbox


def choose_dates(
    known: set[date], since: date | None, until: date | None, *, force: bool
) -> list[date]:
    """The dates a backfill replaces (pure).

    Without bounds: every date the lake holds. With bounds: every day between
    them, the lake's first and last dates standing in for a missing bound.
    A date before the lake's first record would only lose rows: refused
    unless `force`.
    """
    if not known:
        raise ConfigError("the lake holds no records yet: nothing to backfill from")
    first, last = min(known), max(known)
    if since is None and until is None:
        return sorted(known)
    start = since or first
    end = until or max(last, start)
    if start > end:
        raise ConfigError(f"--since {start} is after --until {end}")
    if start < first and not force:
        raise ConfigError(
            f"the lake's first record is from {first}: backfilling from {start} would delete "
            "rows the lake cannot restore (add --force to do it anyway)"
        )
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def refuse_losses(before: dict[date, int], after: dict[date, int], *, force: bool) -> None:
    """Refuse a backfill that leaves a date with fewer rows than it had (pure).

    Such rows were loaded without reaching the lake (a worker without the lake
    setting, a replay without it): replacing the date would lose them for good.
    """
    short = sorted(d for d, n in before.items() if after.get(d, 0) < n)
    if short and not force:
        lost = sum(before[d] - after.get(d, 0) for d in short)
        days = ", ".join(str(d) for d in short[:5]) + (" …" if len(short) > 5 else "")
        raise ConfigError(
            f"the lake holds {lost} fewer rows than user_logins on {days} (rows loaded "
            "without the lake on?): nothing was changed; add --force to replace them anyway"
        )


def _lake_batches(table: Table, dates: list[date]) -> Iterator[pa.RecordBatch]:
    return iceberg.scan_batches(table, on_days(dates), _USER_LOGINS)


def _copy(cur: psycopg.Cursor[Any], batches: Iterator[pa.RecordBatch]) -> int:
    """Binary COPY of Arrow batches into user_logins; returns rows written."""
    written = 0
    with cur.copy(statement("backfill_copy", user_logins=_TABLE)) as copy:
        copy.set_types(_COPY_TYPES)
        for batch in batches:
            columns = [batch.column(name).to_pylist() for name in _USER_LOGINS]
            for row in zip(*columns, strict=True):
                copy.write_row(row)
            written += batch.num_rows
    return written


def backfill(
    settings: Settings,
    *,
    since: date | None = None,
    until: date | None = None,
    force: bool = False,
) -> BackfillResult:
    """Replace the rows of the chosen create_dates with the lake's records."""
    started = time.monotonic()
    lake = Lake.from_settings(settings)
    result = BackfillResult()
    try:
        # The writer lock: no flush meanwhile, so the lake and the outbox stand still.
        with (
            translated("backfill"),
            writer_lock(settings.database_url),
            connect(settings.database_url) as conn,
        ):
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction(), conn.cursor() as cur:
                table = lake.table()
                mark = mark_of(table)
                pending = cur.execute(query("lake_outbox_dates"), mark.params()).fetchall()
                known = set(partitions(table)) | {r[0] for r in pending}
                result.dates = choose_dates(known, since, until, force=force)
                params = {"dates": result.dates}
                before = dict(cur.execute(query("backfill_counts"), params).fetchall())
                result.deleted = cur.execute(query("backfill_delete"), params).rowcount
                result.from_lake = _copy(cur, _lake_batches(table, result.dates))
                cur.execute(
                    statement("backfill_outbox", user_logins=_TABLE), {**params, **mark.params()}
                )
                result.from_outbox = cur.rowcount
                after = dict(cur.execute(query("backfill_counts"), params).fetchall())
                refuse_losses(before, after, force=force)  # raising rolls it all back
    finally:
        lake.close()
    result.seconds = time.monotonic() - started
    return result
