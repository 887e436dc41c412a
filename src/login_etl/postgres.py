"""PostgreSQL: connecting, the schema, and what its errors mean.

psycopg errors are translated here and nowhere else (`translate`, `session`):
connection-level failures become `SinkUnavailable` (retryable); what only the
operator can fix (a malformed URL, a refused login, a missing database,
table or privilege) becomes `ConfigError`; anything else is a
`DatabaseError`. The sink that loads batches is `pgsink.PostgresSink`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from login_etl import redact, schema
from login_etl.errors import ConfigError, DatabaseError, LoginEtlError, SinkUnavailable
from login_etl.sqlfiles import query

log = logging.getLogger(__name__)

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


# libpq's connect_timeout for every connection the service opens, in seconds.
CONNECT_TIMEOUT = 10
# libpq reads connect_timeout in whole seconds and takes 1 as 2: its shortest.
MIN_CONNECT_TIMEOUT = 2


def connect_timeout_within(seconds: float) -> int:
    """libpq's connect_timeout for a connection that must be made within `seconds`.

    Whole seconds rounded down, so as not to outlast `seconds`, never more
    than CONNECT_TIMEOUT nor less than libpq's MIN_CONNECT_TIMEOUT: with less
    than 2 s left an attempt still takes up to 2 s (not CONNECT_TIMEOUT's 10).
    libpq applies it to each address of a host in turn.
    """
    return max(MIN_CONNECT_TIMEOUT, min(CONNECT_TIMEOUT, math.floor(seconds)))


def connect(url: str, *, connect_timeout: float = CONNECT_TIMEOUT) -> psycopg.Connection[Any]:
    """Open a connection; an empty `url` uses libpq's PG* variables.

    `connect_timeout` is cut to whole seconds, at least 2 (libpq's rule):
    `connect_timeout_within`.

    A malformed URL, a refused login or a missing database raise ConfigError
    (retrying cannot help); an unreachable server raises SinkUnavailable.
    """
    check_url(url)
    try:
        return psycopg.connect(
            url,
            connect_timeout=connect_timeout_within(connect_timeout),
            application_name="login-etl",
        )
    except psycopg.Error as exc:
        problem = config_problem(exc)
        if problem is not None:
            raise ConfigError(problem) from exc
        raise SinkUnavailable(
            f"cannot connect to PostgreSQL at {target(url)} (is it up, and is that the host "
            f"and port of LOGIN_ETL_DATABASE_URL or PGHOST/PGPORT?): {_describe(exc)}"
        ) from exc


def target(url: str) -> str:
    """``host:port`` the URL (or libpq's PG* variables) points at; never user or password."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        params = {}
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost (socket)")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    return f"{host}:{port}"


def translate(exc: psycopg.Error) -> LoginEtlError:
    """The login-etl error for a psycopg error: retryable, configuration, or refused."""
    problem = config_problem(exc)
    if problem is not None:
        return ConfigError(problem)
    if is_transient(exc):
        return SinkUnavailable(f"PostgreSQL failed: {_describe(exc)}")
    return DatabaseError(f"PostgreSQL refused a statement (SQLSTATE {exc.sqlstate or 'unknown'})")


@contextmanager
def session(
    url: str, *, connect_timeout: float = CONNECT_TIMEOUT
) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one admin task; every psycopg error leaves as a login-etl error.

    `connect_timeout` as `connect` takes it.
    """
    conn = connect(url, connect_timeout=connect_timeout)
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
    """Bring the schema to the version this code knows (`schema.upgrade`): on a new
    database, `user_logins` (if absent) and the service's own tables.

    A role without DDL rights (a writer, as `login-etl grant writer` makes it)
    is told how to split the work, not sent back to `grant`.
    """
    try:
        applied = schema.upgrade(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            "init-db: this database role may not create or alter tables (a writer role has "
            "no DDL): run `login-etl init-db` once as the tables' owner, and run workers "
            "with --no-init-db (LOGIN_ETL_INIT_DB=false)"
        ) from exc
    if applied:
        log.info("schema upgraded", extra={"fields": {"versions": applied}})
