"""The real sink: one batch per transaction, binary COPY → staging → insert.

Rows, rejections and ledger entries commit together (see `sink` for the
contract). Data errors raised for one row are isolated by bisecting the
batch inside savepoints, so one bad row is rejected and the rest still loads
in the same transaction. Errors leave through `postgres.translate`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from login_etl import record
from login_etl.postgres import CONNECT_TIMEOUT, connect, is_row_error, is_transient, translate
from login_etl.record import Column
from login_etl.sink import Batch, WriteResult, count_reasons
from login_etl.sqlfiles import query, statement
from login_etl.transform import Rejection, Row

log = logging.getLogger(__name__)
_T = TypeVar("_T", Row, Rejection)


@dataclass(frozen=True)
class Staging:
    """How a batch is staged and loaded: statements, COPY types and row values.

    All built by name from the record's declaration (`login_etl.record`).
    """

    create: str  # the staging table: every column of the record
    copy: str
    types: list[str]  # binary COPY's, one per staged column
    values: Callable[[Row], tuple[Any, ...]]  # a row's staged values, in COPY order
    load: str  # ledger, user_logins (and with the lake, the outbox)

    @classmethod
    def of(cls, columns: Sequence[Column] = record.COLUMNS, *, lake: bool) -> Staging:
        """Staging for `columns`; with `lake`, the lake's own columns too."""
        staged = record.staged(columns, lake=lake)
        return cls(
            create=statement("staging", columns=tuple(columns)),
            copy=statement("copy_staging", staged=staged),
            types=[c.copy_type for c in staged],
            values=record.values_of(staged),
            load=statement(
                "load_rows_lake" if lake else "load_rows",
                user_logins=record.user_logins(columns),
                lake=record.lake(columns),
            ),
        )


class _RowError(Exception):
    """PostgreSQL refused at least one row of a statement."""


class PostgresSink:
    """Writes batches to PostgreSQL, one transaction each, reconnecting as needed.

    With `lake`, each loaded row's lake record goes into the lake outbox in
    the same transaction (see `login_etl.lake`).
    """

    def __init__(self, url: str, *, lake: bool = False, write_timeout: float = 300.0) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._staging = Staging.of(lake=lake)
        # A write still running after this long means a hung server: its connection is
        # cut, the write fails as retryable, and the retry policy takes over.
        self._write_timeout = write_timeout

    def __repr__(self) -> str:
        return "PostgresSink()"  # the URL may carry a password

    def _connection(self, connect_timeout: float = CONNECT_TIMEOUT) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, connect_timeout=connect_timeout)
        return self._conn

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _guard(self, connect_timeout: float = CONNECT_TIMEOUT) -> Iterator[psycopg.Connection[Any]]:
        """Every psycopg error leaves as a login-etl error; a transient one also
        drops the connection."""
        try:
            yield self._connection(connect_timeout)
        except psycopg.Error as exc:
            if is_transient(exc):
                self.close()
            raise translate(exc) from exc

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        """Commit the batch; isolate rows PostgreSQL refuses into rejections.

        `timeout` replaces the sink's write timeout for this write (a Lambda
        invocation's remaining time); connecting, when needed, is part of it.
        """
        rows = _dedupe(batch.rows)
        limit = self._write_timeout if timeout is None else timeout
        started = time.monotonic()
        with (
            self._guard(connect_timeout=limit) as conn,
            deadline(conn, limit - (time.monotonic() - started)),
        ):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(query("durable_commit"))
                    cur.execute(self._staging.create)
                    loaded = self._load(cur, rows, isolate=False)
                    return self._finish(cur, rows, loaded, [], batch)
            except _RowError:
                log.warning("a batch hit a row-level database error; isolating the bad rows")
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(query("durable_commit"))
                cur.execute(self._staging.create)
                refused: list[tuple[Row, str]] = []
                loaded = self._bisect(conn, cur, rows, refused)
                return self._finish(cur, rows, loaded, refused, batch)

    def _finish(
        self,
        cur: psycopg.Cursor[Any],
        rows: list[Row],
        loaded: int,
        refused: list[tuple[Row, str]],
        batch: Batch,
    ) -> WriteResult:
        rejections = list(batch.rejections)
        rejections += [batch.reject(row.message_id, reason) for row, reason in refused]
        rejections = _dedupe(rejections)
        fresh = self._record_rejections(cur, rejections)
        return WriteResult(
            loaded=loaded,
            rejected=len(fresh),
            # Everything handed in that neither loaded nor was newly rejected was
            # already ledgered, or a second copy of a message within this batch.
            duplicates=len(batch.rows) + len(batch.rejections) - loaded - len(fresh),
            reasons=count_reasons(fresh),
        )

    def _load(self, cur: psycopg.Cursor[Any], rows: Sequence[Row], *, isolate: bool) -> int:
        if not rows:
            return 0
        try:
            staging = self._staging
            with cur.copy(staging.copy) as copy:
                copy.set_types(staging.types)
                for row in rows:
                    copy.write_row(staging.values(row))
            cur.execute(staging.load)
            loaded = cur.rowcount
            if isolate:
                cur.execute(query("clear_staging"))
            return loaded
        except psycopg.Error as exc:
            if is_row_error(exc):
                raise _RowError(exc.sqlstate or "") from exc
            raise

    def _bisect(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        rows: Sequence[Row],
        refused: list[tuple[Row, str]],
    ) -> int:
        """Load `rows` in savepoints, halving on error until single bad rows remain."""
        if not rows:
            return 0
        try:
            with conn.transaction():  # a savepoint
                return self._load(cur, rows, isolate=True)
        except _RowError as exc:
            if len(rows) == 1:
                refused.append((rows[0], f"db_error:{exc}"))
                return 0
        mid = len(rows) // 2
        return self._bisect(conn, cur, rows[:mid], refused) + self._bisect(
            conn, cur, rows[mid:], refused
        )

    def _record_rejections(
        self, cur: psycopg.Cursor[Any], rejections: list[Rejection]
    ) -> list[Rejection]:
        """Insert rejections not already ledgered; return those inserted.

        One pipelined round trip for the lot, whatever their number.
        """
        if not rejections:
            return []
        params = [
            {
                "message_id": rej.message_id,
                "reason": rej.reason,
                "sent_at": rej.sent_at,
                "receive_count": rej.receive_count,
                "sealed_body": rej.sealed_body,
            }
            for rej in rejections
        ]
        cur.executemany(query("load_rejection"), params, returning=True)
        inserted = set()
        while True:
            row = cur.fetchone()
            if row is not None:
                inserted.add(row[0])
            if not cur.nextset():
                break
        return [rej for rej in rejections if rej.message_id in inserted]


@contextmanager
def deadline(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """Cut `conn`'s socket if the block is still running after `seconds`.

    A server that accepts and never answers (stopped, partitioned) would
    block a query forever: libpq has no client-side timeout, and a cancel
    request would hang the same way. Shutting the socket down wakes the
    blocked call with an error the caller treats as a lost connection.
    """

    def sever() -> None:
        log.warning("a PostgreSQL call hung for %gs; dropping its connection", seconds)
        try:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg.Error):
            pass  # already closed

    timer = threading.Timer(seconds, sever)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dedupe(items: list[_T]) -> list[_T]:
    """Keep the first item per message id (one message received twice in a batch)."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item.message_id not in seen:
            seen.add(item.message_id)
            out.append(item)
    return out
