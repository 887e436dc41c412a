"""Least privilege: give an existing PostgreSQL role one of two fixed sets.

* ``writer``: what ``login-etl run --no-init-db`` needs once the owner has
  run ``init-db``: ``SELECT, INSERT`` on ``user_logins``, the DML of the
  service's own tables, temporary tables; no DDL, no PII audit.
* ``analyst``: ``SELECT`` on ``user_logins`` only.

Each set lives in ``sql/grant_<role>.sql`` (one line per table, so a table
that a later feature adds is granted by adding its line); every grant
starts from ``sql/revoke_all.sql``, so the role ends with exactly that set.
Role and database names go in as identifiers, never formatted as text.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from login_etl.errors import ConfigError
from login_etl.sqlfiles import query

ROLES = ("writer", "analyst")


def grant(conn: psycopg.Connection[Any], kind: str, role: str) -> None:
    """Give `role` exactly the `kind` set of privileges, in one transaction."""
    if kind not in ROLES:
        raise ConfigError(f"unknown role kind {kind!r}: choose one of {', '.join(ROLES)}")
    with conn.transaction():
        found = conn.execute(query("grant_check"), {"role": role}).fetchone()
        if found is None:
            raise ConfigError("no such PostgreSQL role: create it first (CREATE ROLE … LOGIN)")
        superuser, owns_tables, database, schema = found
        if superuser:
            raise ConfigError("that role is a superuser: privileges cannot restrict it")
        if owns_tables:
            raise ConfigError(
                "that role owns the service's tables (or is a member of their owner): "
                "grant to a separate role"
            )
        names = {
            "role": sql.Identifier(role),
            "database": sql.Identifier(database),
            "schema": sql.Identifier(schema),
        }
        for name in ("revoke_all", f"grant_{kind}"):
            conn.execute(sql.SQL(query(name)).format(**names))
