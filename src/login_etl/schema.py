"""The schema's version: ordered migrations, applied by init-db, checked by workers.

Each ``sql/migrations/NNNN_name.sql`` is one migration, numbered from 1
without gaps; ``login_etl_schema_version`` holds a row for each one applied.
`upgrade` (init-db) applies the pending ones in name order in one transaction,
under the advisory lock of ``sql/schema_lock.sql``, so two workers starting at
once apply each migration once. `check` (a worker, the Lambda handler) only
reads the version: it refuses a database newer than this code, and one with
migrations pending, since a worker role has no DDL rights.

Migrations 1 and 2 are idempotent (``CREATE … IF NOT EXISTS``, ``CREATE OR
REPLACE``): a database made before the version table existed has every
statement re-run on it, creating only what it lacks, and is then recorded at
version 2. A later migration runs once, so it may alter what exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import psycopg

from login_etl.errors import ConfigError
from login_etl.sqlfiles import query

_FILE = re.compile(r"(\d{4})_\w+\.sql")


@dataclass(frozen=True)
class Migration:
    """One file of ``sql/migrations``: its number, file name and SQL text."""

    version: int
    name: str
    text: str


def numbered(names: Iterable[str]) -> list[tuple[int, str]]:
    """(version, name) of each migration file in order; raise ValueError unless
    they are numbered 1, 2, 3… with no gap, duplicate or stray file name."""
    found = []
    for name in names:
        match = _FILE.fullmatch(name)
        if match is None:
            raise ValueError(f"{name}: a migration is named NNNN_words.sql")
        found.append((int(match[1]), name))
    found.sort()
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations must be numbered 1..{len(found)} once each: {versions}")
    return found


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration this code knows, in order."""
    folder = resources.files("login_etl").joinpath("sql", "migrations")
    files = [f.name for f in folder.iterdir() if f.name.endswith(".sql")]
    return tuple(
        Migration(v, name, folder.joinpath(name).read_text("utf-8")) for v, name in numbered(files)
    )


def latest() -> int:
    """The highest version this code knows."""
    return len(migrations())


def version(conn: psycopg.Connection[Any]) -> int:
    """The database's schema version: 0 where no migration was ever recorded."""
    exists = conn.execute(query("schema_version_exists")).fetchone()
    if not (exists and exists[0]):
        return 0
    row = conn.execute(query("schema_version")).fetchone()
    return int(row[0]) if row else 0


def _refuse_newer(current: int) -> None:
    if current > latest():
        raise ConfigError(
            f"the database schema is version {current}; this login-etl knows up to "
            f"{latest()}: upgrade login-etl"
        )


def check(conn: psycopg.Connection[Any]) -> None:
    """Raise ConfigError unless the database is at exactly the version this code knows."""
    current = version(conn)
    _refuse_newer(current)
    if current < latest():
        raise ConfigError(
            f"the database schema is version {current} and this login-etl needs {latest()}: "
            "run `login-etl init-db` once as the tables' owner (workers with --no-init-db "
            "do not change the schema)"
        )


def upgrade(conn: psycopg.Connection[Any]) -> list[int]:
    """Apply the pending migrations in one transaction; return the versions applied."""
    applied = []
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(query("schema_lock"))  # held until commit: one upgrade at a time
        cur.execute(query("schema_version_table"))
        current = version(conn)
        _refuse_newer(current)
        for migration in migrations()[current:]:
            cur.execute(migration.text)
            cur.execute(query("schema_version_record"), {"version": migration.version})
            applied.append(migration.version)
    return applied
