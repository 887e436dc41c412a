"""Helpers for integration tests: run the CLI as a user would."""

from __future__ import annotations

import subprocess
import sys
import time
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


def queue_depth(client: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) of a queue."""
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def assert_queue_empties(client: Any, queue_url: str, env: dict[str, str]) -> None:
    """The queue ends empty, and nothing left in it is new to the ledger.

    moto's receive can fail with a 500 under concurrent calls after it has
    already marked messages received ("Set changed size during iteration");
    like a lost answer from real SQS, those stay in flight until their
    visibility lapses. They then come back, and a drain must skip them all.
    """
    for _ in range(3):
        if queue_depth(client, queue_url) == (0, 0):
            return
        timeout = int(
            client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])[
                "Attributes"
            ]["VisibilityTimeout"]
        )
        deadline = time.monotonic() + timeout + 15
        while queue_depth(client, queue_url)[1] and time.monotonic() < deadline:
            time.sleep(0.5)
        done = cli(env, "run", "--drain")
        assert done.returncode == 0, done.stderr[-3000:]
        stopped = [line for line in done.stderr.splitlines() if "worker stopped" in line]
        assert stopped and " loaded=0 rejected=0 " in stopped[-1], done.stderr[-3000:]
    assert queue_depth(client, queue_url) == (0, 0)
