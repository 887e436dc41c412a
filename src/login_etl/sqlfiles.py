"""Load the SQL statements kept in ``login_etl/sql/*.sql``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources

from psycopg import sql

from login_etl.record import Column


@cache
def query(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    return resources.files("login_etl").joinpath("sql", f"{name}.sql").read_text("utf-8")


@cache
def statement(name: str, **lists: Sequence[Column]) -> str:
    """``sql/<name>.sql`` with its column lists filled in from the record (`login_etl.record`).

    For each keyword ``k``, ``{k}`` in the file becomes the columns' names,
    ``{k_defs}`` their definitions (name and type) and ``{k_params}`` one
    named parameter per column. Only names and types declared in the code are
    composed (by psycopg's `sql`), never a value.
    """
    parts: dict[str, sql.Composable] = {}
    for key, columns in lists.items():
        parts[key] = sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)
        parts[f"{key}_defs"] = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.sql_type)) for c in columns
        )
        parts[f"{key}_params"] = sql.SQL(", ").join(sql.Placeholder(c.name) for c in columns)
    return sql.SQL(query(name)).format(**parts).as_string()
