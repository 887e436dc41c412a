"""Least privilege: give an existing PostgreSQL role one of three fixed sets.

* ``writer``: what ``login-etl run --no-init-db`` needs once the owner has
  run ``init-db``: ``SELECT, INSERT`` on ``user_logins``, the DML of the
  service's own tables, temporary tables; no DDL, no PII audit.
* ``analyst``: ``SELECT`` on ``user_logins`` only.
* ``recovery``: what ``unmask`` and ``rejects list --show-bodies`` need:
  ``SELECT`` on ``user_logins`` and ``user_logins_rejected``, and ``EXECUTE``
  on the function that records each access; nothing on the audit table.

Each set lives in ``sql/grant_<role>.sql`` (one line per table, so a table
that a later feature adds is granted by adding its line); every grant
starts from ``sql/revoke_all.sql``, so the role ends with exactly that set.
A set means what it says only if the role cannot read past privileges or
raise its own: `refusal` names what would let it, and `grant` refuses such a
role. Role and database names go in as identifiers, never formatted as text.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from login_etl.errors import ConfigError
from login_etl.reveal import escape
from login_etl.sqlfiles import query

ROLES = ("writer", "analyst", "recovery")

# Attributes that make privileges meaningless, held by the role or by a role
# it can become (SET ROLE). CREATEDB is not among them: a database of its own
# gives no access to this one's tables and no way to raise its privileges here.
_ATTRIBUTES = (
    ("SUPERUSER", "is a superuser, which privileges cannot restrict"),
    ("CREATEROLE", "can grant itself any role, pg_read_all_data among them"),
    ("BYPASSRLS", "reads past row-level security policies"),
    ("REPLICATION", "reads every table's changes through replication"),
)
# Predefined roles whose members read or write past every grant. pg_monitor is
# refused through pg_read_all_stats, which it contains; pg_read_all_settings,
# pg_stat_scan_tables and pg_signal_backend read no table data.
_PREDEFINED = {
    "pg_read_all_data": "reads every table, the audit and the sealed bodies among them",
    "pg_write_all_data": "writes every table",
    "pg_read_server_files": "reads the server's files, the tables' own among them",
    "pg_write_server_files": "writes the server's files, its configuration among them",
    "pg_execute_server_program": "runs programs as the server's operating-system user",
    "pg_read_all_stats": "reads the query text of every session",
    "pg_database_owner": "owns this database",
}


def refusal(memberships: list[tuple[Any, ...]]) -> str | None:
    """Why a role must not get a set, or None.

    `memberships` are the rows of ``sql/grant_memberships.sql``: the role
    itself first, then each role it is a member of, with their attributes.
    """
    for n, (name, *flags) in enumerate(memberships):
        via = "that role" if n == 0 else f"that role is a member of {escape(name)}, which"
        for (attribute, why), held in zip(_ATTRIBUTES, flags, strict=True):
            if held:
                return f"{via} has {attribute}: it {why}; grant to a role without it"
    for name, *_ in memberships:
        if name in _PREDEFINED:
            return (
                f"that role is a member of {name}: it {_PREDEFINED[name]}; "
                "grant to a role that is not"
            )
    return None


def _why_not(
    memberships: list[tuple[Any, ...]],
    owns_tables: bool,
    owns_schema: bool,
    owns_database: bool,
    schema: str,
) -> str | None:
    """Why the role may get no set at all, or None.

    Its own attributes first (a superuser owns everything too), then what it
    owns, then what it can become.
    """
    owned = [
        (owns_tables, "that role owns the service's tables (or is a member of their owner)"),
        (owns_database, "that role owns this database (it can change every session's settings)"),
        (owns_schema, f"that role owns schema {escape(schema)} (it can drop and replace tables)"),
    ]
    itself = refusal(memberships[:1])
    if itself is not None:
        return itself
    for held, why in owned:
        if held:
            return f"{why}: grant to a separate role"
    return refusal(memberships)


def _schema_refusal(found: tuple[Any, ...] | None) -> str | None:
    """Why CREATE on another schema (sql/grant_schemas.sql) disqualifies, or None."""
    if found is None:
        return None
    return (
        f"that role may create objects in schema {escape(found[0])}, which another role's"
        " search path can reach before the service's tables; grant to a role without"
        " CREATE there"
    )


def _parameter_refusal(found: psycopg.Cursor[Any]) -> str | None:
    """Why a privilege on a superuser's setting (PostgreSQL 15) disqualifies, or None.

    ALTER SYSTEM sets archive_command, a program the server runs as its
    operating-system user; SET session_replication_role = replica skips
    triggers, SET log_statement = none hides statements from the log.
    """
    row = found.fetchone()
    if row is None:
        return None
    privilege, parameter = row
    return (
        f"that role may {privilege} parameter {escape(parameter)}, a superuser's setting"
        " (ALTER SYSTEM runs programs through archive_command; SET can skip triggers"
        " or the statement log); grant to a role without it"
    )


def grant(conn: psycopg.Connection[Any], kind: str, role: str) -> None:
    """Give `role` exactly the `kind` set of privileges, in one transaction."""
    if kind not in ROLES:
        raise ConfigError(f"unknown role kind {kind!r}: choose one of {', '.join(ROLES)}")
    with conn.transaction():
        found = conn.execute(query("grant_check"), {"role": role}).fetchone()
        if found is None:
            raise ConfigError("no such PostgreSQL role: create it first (CREATE ROLE … LOGIN)")
        owns_tables, owns_schema, owns_database, database, schema = found
        memberships = conn.execute(query("grant_memberships"), {"role": role}).fetchall()
        why = _why_not(memberships, owns_tables, owns_schema, owns_database, schema)
        if why is None:
            other = conn.execute(query("grant_schemas"), {"role": role, "schema": schema})
            why = _schema_refusal(other.fetchone())
        if why is None and conn.info.server_version >= 150000:
            why = _parameter_refusal(conn.execute(query("grant_parameters"), {"role": role}))
        if why is not None:
            raise ConfigError(why)
        names = {
            "role": sql.Identifier(role),
            "database": sql.Identifier(database),
            "schema": sql.Identifier(schema),
        }
        for name in ("revoke_all", f"grant_{kind}"):
            conn.execute(sql.SQL(query(name)).format(**names))
