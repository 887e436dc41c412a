"""PostgreSQL: schema setup and the real sink (binary COPY → staging → insert).

psycopg errors are translated here and nowhere else: connection-level
failures become `SinkUnavailable` (retryable); what only the operator can fix
(a refused login, a missing database, table or privilege) becomes
`ConfigError`; data errors raised for one row are isolated by bisecting the
batch inside savepoints, so one bad row is rejected and the rest still loads
in the same transaction; anything else is a `DatabaseError`.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from login_etl import redact
from login_etl.errors import ConfigError, DatabaseError, LoginEtlError, SinkUnavailable
from login_etl.sink import Batch, WriteResult, count_reasons
from login_etl.sqlfiles import query
from login_etl.transform import Rejection, Row

log = logging.getLogger(__name__)
_T = TypeVar("_T", Row, Rejection)

_STAGING_TYPES = [
    "text",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "int4",
    "date",
    "timestamptz",
]
# With the lake on, staging also takes the lake record's two extra columns.
_STAGING_TYPES_LAKE = [*_STAGING_TYPES, "text", "text"]
# libpq reports a refused login without its SQLSTATE, so these are known by
# the server's message. A server answering in another language makes them
# look transient: retried until --max-retry-time, then reported.
_REFUSED_LOGIN_TEXT = re.compile(
    r"FATAL:\s+(password authentication failed"
    r"|(role|database) \".*\" does not exist"
    r"|unrecognized configuration parameter|invalid value for parameter"
    r"|role \"[^\"]*\" is not permitted to log in"
    r"|no pg_hba\.conf entry|pg_hba\.conf rejects connection"
    r"|permission denied for database)"
    r"|fe_sendauth: no password supplied"
    # libpq's own refusals of a connection option, before any server is asked
    r"|invalid \w+ value:|invalid integer value"
)
# SQLSTATE classes that mean "this row can never be stored": data exceptions,
# integrity violations, and errors raised by triggers (PL/pgSQL RAISE).
_ROW_ERROR_CLASSES = ("22", "23", "P0")
# Retrying the whole batch on a new connection may succeed: connection
# exceptions (08), rollbacks such as deadlocks and serialization failures (40),
# insufficient resources (53), operator intervention such as a shutdown, a
# server still starting or a cancelled statement (57), system errors (58).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
# lock_not_available (a lock_timeout), and read_only_sql_transaction: after a
# failover the connection may have reached the old primary, now a standby.
_TRANSIENT_STATES = frozenset({"55P03", "25006"})
# What an operator must fix: missing tables or database, privileges, authentication.
_CONFIG_STATES = {
    "42P01": "tables missing: run `login-etl init-db` first",
    "3D000": "the database does not exist",
    "42501": "permission denied: the role lacks a privilege (see `login-etl grant`)",
    "28P01": "password authentication failed",
    "28000": "the server refused this role or host (pg_hba.conf)",
}


class _RowError(Exception):
    """PostgreSQL refused at least one row of a statement."""


def is_row_error(exc: psycopg.Error) -> bool:
    """True when PostgreSQL refused the data itself, not the connection."""
    state = exc.sqlstate or ""
    return state.startswith(_ROW_ERROR_CLASSES)


def is_transient(exc: BaseException) -> bool:
    """True when retrying on a new connection may succeed.

    The SQLSTATE decides when there is one (a refused password is an
    OperationalError too); without one, a lost or refused connection is
    transient unless the server refused the login itself.
    """
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state:
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    if _REFUSED_LOGIN_TEXT.search(str(exc)):
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def config_problem(exc: psycopg.Error) -> str | None:
    """One line saying what the operator must fix, or None for other errors."""
    state = exc.sqlstate or ""
    if state in _CONFIG_STATES:
        return f"PostgreSQL: {_CONFIG_STATES[state]} (SQLSTATE {state})"
    if state.startswith("28"):  # any other invalid_authorization_specification
        return f"PostgreSQL refused the login (SQLSTATE {state})"
    if not state and _REFUSED_LOGIN_TEXT.search(str(exc)):
        return f"PostgreSQL refused the login: {_describe(exc)}"
    return None


# libpq options with a closed set of values: a typo there is configuration, not an outage.
_ENUMERATED = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
}


def check_url(url: str) -> None:
    """Raise ConfigError (never quoting the URL) unless libpq can parse `url`."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        raise ConfigError(
            "the database URL is malformed (expected postgresql://user@host:port/dbname "
            "or key=value pairs)"
        ) from None
    for port in str(params.get("port") or "5432").split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError("the database URL has an invalid port number")
    for name, allowed in _ENUMERATED.items():
        value = params.get(name)
        if value is not None and str(value) not in allowed:
            raise ConfigError(f"the database URL's {name} must be one of {', '.join(allowed)}")


def connect(url: str, *, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """Open a connection; an empty `url` uses libpq's PG* variables.

    A malformed URL, a refused login or a missing database raise ConfigError
    (retrying cannot help); an unreachable server raises SinkUnavailable.
    """
    check_url(url)
    try:
        return psycopg.connect(url, connect_timeout=connect_timeout, application_name="login-etl")
    except psycopg.Error as exc:
        problem = config_problem(exc)
        if problem is not None:
            raise ConfigError(problem) from exc
        raise SinkUnavailable(f"cannot connect to PostgreSQL: {_describe(exc)}") from exc


def translate(exc: psycopg.Error) -> LoginEtlError:
    """The login-etl error for a psycopg error: retryable, configuration, or refused."""
    problem = config_problem(exc)
    if problem is not None:
        return ConfigError(problem)
    if is_transient(exc):
        return SinkUnavailable(f"PostgreSQL failed: {_describe(exc)}")
    return DatabaseError(f"PostgreSQL refused a statement (SQLSTATE {exc.sqlstate or 'unknown'})")


@contextmanager
def session(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one admin task; every psycopg error leaves as a login-etl error."""
    conn = connect(url)
    try:
        with conn:
            yield conn
    except psycopg.Error as exc:
        raise translate(exc) from exc


def locked_pages(
    conn: psycopg.Connection[Any], name: str, params: dict[str, Any], *, after: str, page: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Keyset pages of ``sql/<name>.sql``, each yielded inside its own transaction.

    The query takes ``%(after)s`` and ``%(limit)s`` and returns its key first;
    its rows stay locked (``FOR UPDATE``) while the caller works on the page.
    """
    while True:
        with conn.transaction():
            rows = conn.execute(query(name), {**params, "after": after, "limit": page}).fetchall()
            yield rows
        if len(rows) < page:
            return
        after = rows[-1][0]


def _describe(exc: psycopg.Error) -> str:
    """One line about a psycopg error; never includes row data or a password."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact.scrub(f"{type(exc).__name__}: {first}")[:300]


def init_schema(conn: psycopg.Connection[Any]) -> None:
    """Create `user_logins` (if absent) and the service's own tables; idempotent."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("schema_lock"))
        cur.execute(query("schema"))
        cur.execute(query("lake_schema"))  # the lake's outbox and catalog (login_etl.lake)


def staging_tuple(r: Row) -> tuple[Any, ...]:
    """A row as the staging table's columns: message_id, the 7 user_logins columns, sent_at."""
    return (
        r.message_id,
        r.user_id,
        r.device_type,
        r.masked_ip,
        r.masked_device_id,
        r.locale,
        r.app_version,
        r.create_date,
        r.sent_at,
    )


def lake_staging_tuple(r: Row) -> tuple[Any, ...]:
    """`staging_tuple` plus the lake record's columns: app_version_raw, extra."""
    return (*staging_tuple(r), r.app_version_raw, r.extra)


class PostgresSink:
    """Writes batches to PostgreSQL, one transaction each, reconnecting as needed.

    With `lake`, each loaded row's lake record goes into the lake outbox in
    the same transaction (see `login_etl.lake`).
    """

    def __init__(self, url: str, *, lake: bool = False, write_timeout: float = 300.0) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._copy, self._types, self._tuple, self._load_rows = (
            ("copy_staging_lake", _STAGING_TYPES_LAKE, lake_staging_tuple, "load_rows_lake")
            if lake
            else ("copy_staging", _STAGING_TYPES, staging_tuple, "load_rows")
        )
        # A write still running after this long means a hung server: its connection is
        # cut, the write fails as retryable, and the retry policy takes over.
        self._write_timeout = write_timeout

    def __repr__(self) -> str:
        return "PostgresSink()"  # the URL may carry a password

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url)
        return self._conn

    def close(self) -> None:
        """Close the connection, if open."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @contextmanager
    def _guard(self) -> Iterator[psycopg.Connection[Any]]:
        """Every psycopg error leaves as a login-etl error; a transient one also
        drops the connection."""
        try:
            yield self._connection()
        except psycopg.Error as exc:
            if is_transient(exc):
                self.close()
            raise translate(exc) from exc

    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch; isolate rows PostgreSQL refuses into rejections."""
        rows = _dedupe(batch.rows)
        with self._guard() as conn, _deadline(conn, self._write_timeout):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(query("durable_commit"))
                    cur.execute(query("staging"))
                    loaded = self._load(cur, rows, isolate=False)
                    return self._finish(cur, rows, loaded, [], batch)
            except _RowError:
                log.warning("a batch hit a row-level database error; isolating the bad rows")
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(query("durable_commit"))
                cur.execute(query("staging"))
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
            with cur.copy(query(self._copy)) as copy:
                copy.set_types(self._types)
                for row in rows:
                    copy.write_row(self._tuple(row))
            cur.execute(query(self._load_rows))
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
def _deadline(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
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
