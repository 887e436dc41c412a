"""Helpers for integration tests: run the CLI as a user would."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg

# The brief's DDL, exactly: the analysts' table as it may already exist.
USER_LOGINS_DDL = """
CREATE TABLE IF NOT EXISTS user_logins(
    user_id             varchar(128),
    device_type         varchar(32),
    masked_ip           varchar(256),
    masked_device_id    varchar(256),
    locale              varchar(32),
    app_version         integer,
    create_date         date
);
"""


def cli(
    env: dict[str, str], *args: str, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run `python -m login_etl ARGS` in a subprocess with `env`."""
    return subprocess.run(
        [sys.executable, "-m", "login_etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one query on `url` and return all rows."""
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params or None).fetchall()


def scalar(url: str, sql: str, *params: Any) -> Any:
    """First column of the first row."""
    return query(url, sql, *params)[0][0]


def dump_text(url: str) -> str:
    """Every value of every table in the public schema, as one string."""
    out = []
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for t in tables:
            for row in conn.execute(
                psycopg.sql.SQL("SELECT * FROM {}").format(psycopg.sql.Identifier(t))
            ).fetchall():
                out.append(" ".join(str(v) for v in row))
    return "\n".join(out)
