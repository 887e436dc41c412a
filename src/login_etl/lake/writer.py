"""The lake writer: outbox rows → Iceberg, exactly once, in large files.

One pass (`flush`), under a PostgreSQL advisory lock so that one worker
writes at a time:

1. read the outbox high-water mark from the table's current snapshot, and
   delete outbox rows at or below it (a crash after an Iceberg commit but
   before the outbox delete left them: they are in the lake already);
2. unless forced, stop while the outbox is small and young (`Policy`);
3. take the next final rows above the mark — rows of transactions that have
   all ended, in (xid, id) order, so no row can later appear below the new
   mark — and append them to Iceberg with the new mark in the snapshot
   summary; the commit fails if anyone else committed meanwhile;
4. delete the appended rows from the outbox, and go on while enough remain.

A crash anywhere leaves either no commit (the rows stay in the outbox and go
in the next pass; the files written become orphans that `lake maintain`
removes) or a commit whose mark step 1 finds. `LakeWriter` runs passes on a
thread inside `run`; if the lake does not answer, PostgreSQL loading goes
on and the outbox grows (the ``login_etl_lake_outbox_rows`` gauge).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from login_etl import record
from login_etl.errors import LakeUnavailable, LoginEtlError, RetryableError, RetryTimeExceeded
from login_etl.lake import iceberg
from login_etl.lake.iceberg import translated
from login_etl.lake.table import COLUMNS, MARK_KEY, Lake, Mark, mark_of, to_arrow
from login_etl.postgres import connect
from login_etl.retry import Retrier
from login_etl.sqlfiles import query, statement
from login_etl.threads import Threads

if TYPE_CHECKING:
    import pyarrow as pa

    from login_etl.config import Settings
    from login_etl.metrics import Stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    """When a pass appends: enough rows, or rows old enough. Also the most per commit."""

    rows: int = 100_000
    age_seconds: float = 300.0
    chunk_rows: int = 100_000
    poll_seconds: float = 5.0


@dataclass
class FlushResult:
    """What one pass did."""

    appended: int = 0
    commits: int = 0
    recovered: int = 0  # outbox rows found already in the lake (a crash before the delete)
    outbox: int = 0
    busy: bool = False  # another worker held the writer lock


def _try_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(query("lake_lock")).fetchone()
    return bool(row and row[0])


def wait_for_lock(conn: psycopg.Connection[Any], timeout: float = 600.0) -> None:
    """Take the writer lock, waiting for a running pass to end (admin commands)."""
    deadline = time.monotonic() + timeout
    while not _try_lock(conn):
        if time.monotonic() > deadline:
            raise LoginEtlError("the lake writer lock stayed taken; try again later")
        time.sleep(0.2)


def still_locked(conn: psycopg.Connection[Any]) -> None:
    """Raise unless `conn`'s session still holds the writer lock.

    A session that died (a dropped idle connection, a server restart) has
    released it, and a writer may since be writing a file not yet committed.
    """
    row = conn.execute(query("lake_lock_held")).fetchone()
    if not (row and row[0]):
        raise LakeUnavailable("lake: the writer lock was lost; try again")


def unlock(conn: psycopg.Connection[Any]) -> None:
    """Release the writer lock (a closed connection releases it too)."""
    if not conn.closed:
        conn.execute(query("lake_unlock"))


@contextmanager
def writer_lock(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """Hold the writer lock on a connection of its own (admin commands); yield it.

    Waits for a running pass to end; released on exit (and by the session's
    end, should the process die first).
    """
    with connect(database_url) as lock:
        lock.autocommit = True
        wait_for_lock(lock)
        try:
            yield lock
        finally:
            unlock(lock)


def forget(conn: psycopg.Connection[Any], mark: Mark) -> int:
    """Delete outbox rows at or below `mark`: they are in the lake."""
    return conn.execute(query("lake_outbox_forget"), mark.params()).rowcount


def backlog(conn: psycopg.Connection[Any]) -> tuple[int, float]:
    """(rows in the outbox, age of the oldest in seconds)."""
    row = conn.execute(query("lake_outbox_backlog")).fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def _take(conn: psycopg.Connection[Any], mark: Mark, limit: int) -> tuple[Mark, pa.Table] | None:
    """The next final outbox rows above `mark`: the mark of the last, and the rows; or None."""
    horizon = conn.execute(query("lake_outbox_horizon")).fetchone()
    params = {**mark.params(), "horizon": horizon[0] if horizon else "0", "limit": limit}
    with conn.cursor() as cur:
        rows = cur.execute(statement("lake_outbox_take", lake=record.lake()), params).fetchall()
        if not rows:
            return None
        names = [column.name for column in cur.description or ()]
    by_name = dict(zip(names, zip(*rows, strict=True), strict=True))
    last = Mark(int(by_name["xid"][-1]), int(by_name["id"][-1]))
    return last, to_arrow([list(by_name[name]) for name in COLUMNS])


def flush(
    conn: psycopg.Connection[Any], lake: Lake, *, policy: Policy, force: bool = False
) -> FlushResult:
    """One pass of the writer on an autocommit connection (see the module doc)."""
    if not _try_lock(conn):
        return FlushResult(busy=True, outbox=backlog(conn)[0])
    try:
        table = lake.table()
        mark = mark_of(table)
        result = FlushResult(recovered=forget(conn, mark))
        if result.recovered:
            log.info(
                "lake: outbox rows already committed were removed",
                extra={"fields": {"rows": result.recovered, "mark": str(mark)}},
            )
        while True:
            waiting, oldest = backlog(conn)
            if not force and waiting < policy.rows and oldest < policy.age_seconds:
                break
            taken = _take(conn, mark, policy.chunk_rows)
            if taken is None:
                break
            new, data = taken
            rows = data.num_rows
            iceberg.append(table, data, {MARK_KEY: str(new), "login-etl.rows": str(rows)})
            forget(conn, new)
            mark = new
            result.appended += rows
            result.commits += 1
            log.info(
                "lake: appended",
                extra={"fields": {"rows": rows, "mark": str(new)}},
            )
            if rows < policy.chunk_rows:
                break
        result.outbox = backlog(conn)[0]
        return result
    finally:
        unlock(conn)


def flush_once(settings: Settings, *, policy: Policy | None = None) -> FlushResult:
    """`login-etl lake flush`: append everything final in the outbox now.

    Failures are retried for up to ``--max-retry-time`` (stage ``lake``).
    """
    lake = Lake.from_settings(settings)

    def once() -> FlushResult:
        with connect(settings.database_url) as conn, translated("flush"):
            conn.autocommit = True
            return flush(conn, lake, policy=policy or Policy(), force=True)

    try:
        return Retrier(settings.max_retry_time).call("lake", once)
    finally:
        lake.close()


class LakeWriter:
    """Passes of `flush` on a thread until `close`, which makes a last forced pass.

    Failures are retried under the worker's policy (stage ``lake``); one that
    outlasts it is logged and the next pass tries again, so an outage of the
    lake never stops PostgreSQL loading. Anything else its thread raises (a
    bug, not an outage) is an error of `threads`, whose stop ends the worker;
    that registry's stop event also ends the loop.
    """

    def __init__(
        self,
        settings: Settings,
        stats: Stats | None = None,
        *,
        policy: Policy | None = None,
        on_retry: Callable[[str], None] | None = None,
        threads: Threads | None = None,
    ) -> None:
        self._url = settings.database_url
        self._lake = Lake.from_settings(settings)
        self._stats = stats
        self.policy = policy or Policy()
        self._on_retry = on_retry
        self._threads = threads or Threads()
        self._retrier = Retrier(
            settings.max_retry_time, stop=self._threads.stop, on_retry=self._retried
        )
        self._conn: psycopg.Connection[Any] | None = None
        self._thread: threading.Thread | None = None
        self.appended = 0

    def __repr__(self) -> str:
        return f"LakeWriter({self._lake!r})"

    def start(self) -> LakeWriter:
        """Check the table answers (a misconfiguration fails here), then start the thread."""
        try:
            self._lake.table()
        except RetryableError as exc:  # ConfigError goes up: one line, exit 2
            log.warning("lake: not reachable at start, loading goes on: %s", exc)
        self._thread = self._threads.start("lake-writer", self._loop)
        return self

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
            self._conn.autocommit = True
        return self._conn

    def _report_backlog(self) -> None:
        """Poll the outbox for the gauge: PostgreSQL alone, so it works while the lake is down."""
        if self._stats is None:
            return
        try:
            self._stats.lake_outbox(backlog(self._connection())[0])
        except (LoginEtlError, psycopg.Error):
            pass  # PostgreSQL trouble shows on the loading side

    def _retried(self, stage: str) -> None:
        if self._on_retry is not None:
            self._on_retry(stage)
        self._report_backlog()

    def _pass(self, force: bool) -> FlushResult:
        def once() -> FlushResult:
            try:
                with translated("flush"):
                    return flush(self._connection(), self._lake, policy=self.policy, force=force)
            except LoginEtlError:
                if self._conn is not None:
                    self._conn.close()  # a fresh connection (and lock) next time
                raise

        result = self._retrier.call("lake", once)
        self.appended += result.appended
        if self._stats is not None:
            self._stats.lake_outbox(result.outbox)
        return result

    def _safe_pass(self, force: bool) -> None:
        try:
            self._pass(force)
        except RetryTimeExceeded as exc:
            log.warning("lake: gave up until the next pass; the outbox keeps the rows: %s", exc)
        except LoginEtlError as exc:
            log.error("lake: pass failed; the outbox keeps the rows: %s", exc)

    def _loop(self) -> None:
        while not self._retrier.stop.wait(self.policy.poll_seconds):
            self._safe_pass(force=False)
            self._report_backlog()

    def close(self, *, final: bool = True) -> None:
        """Stop the thread; with `final`, append what is left (drain end, shutdown).

        Sets the stop of the writer's registry: the worker's, already set when
        its loop is done; a registry of its own when none was given.
        """
        self._threads.stop.set()  # also cuts a retry wait short
        if self._thread is not None:
            self._thread.join(timeout=60)
        if final:
            # One attempt: at shutdown an unreachable lake must not hold the worker.
            self._safe_pass(force=True)
        if self._conn is not None:
            self._conn.close()
        self._lake.close()
