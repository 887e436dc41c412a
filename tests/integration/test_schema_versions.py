"""Versioned schema on real PostgreSQL: init-db upgrades, workers refuse what they don't know.

`data/schema_before_versions.sql` is the schema as init-db made it before
the version table existed; a database made from it, with rows in every
table, is upgraded by today's init-db without loss.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from login_etl import schema
from login_etl.aws_lambda import Handler
from login_etl.errors import ConfigError
from login_etl.masking import Masker, decode_key
from login_etl.postgres import init_schema, session

from .helpers import cli, drain, error_lines, event, query, scalar, send, wait_for
from .test_lambda import Context, delivered

BEFORE_VERSIONS = Path(__file__).parent / "data" / "schema_before_versions.sql"
TABLES = (
    "user_logins",
    "login_etl_ledger",
    "user_logins_rejected",
    "login_etl_pii_access",
    "login_etl_lake_outbox",
    "iceberg_tables",
    "iceberg_namespace_properties",
)


def make_previous_release_database(url: str, key: str) -> None:
    """The old schema with a loaded row, a rejection, an audit row, an outbox row and
    a catalog entry, masked and sealed under `key` as the old worker would have."""
    masker = Masker(decode_key(key))
    ip, device = masker.mask("ip", "192.0.2.7"), masker.mask("device_id", "dev-7")
    with psycopg.connect(url) as conn:
        conn.execute(BEFORE_VERSIONS.read_text("utf-8"))
        conn.execute(
            "INSERT INTO user_logins VALUES ('u-old', 'ios', %s, %s, 'en_GB', 203, '2024-05-01')",
            (ip, device),
        )
        conn.execute(
            "INSERT INTO login_etl_ledger (message_id, outcome, sent_at) VALUES"
            " ('m-old', 'loaded', '2024-05-01T12:00Z'), ('m-bad', 'rejected', '2024-05-01T12:01Z')"
        )
        conn.execute(
            "INSERT INTO user_logins_rejected (message_id, reason, sent_at, sealed_body)"
            " VALUES ('m-bad', 'not_json', '2024-05-01T12:01Z', %s)",
            (masker.seal(b"{not json", "m-bad"),),
        )
        conn.execute(
            "INSERT INTO login_etl_pii_access (actor, command, field, value_count, purpose)"
            " VALUES ('alice', 'unmask', 'ip', 1, 'incident 42')"
        )
        conn.execute(
            "INSERT INTO login_etl_lake_outbox (message_id, sent_at, create_date, user_id,"
            " device_type, masked_ip, masked_device_id, locale, app_version, app_version_raw,"
            " extra) VALUES ('m-old', '2024-05-01T12:00Z', '2024-05-01', 'u-old', 'ios', %s, %s,"
            " 'en_GB', 203, '2.3', '{}')",
            (ip, device),
        )
        conn.execute(
            "INSERT INTO iceberg_tables VALUES ('lake', 'login_etl', 'user_logins', 'm1', NULL,"
            " 'TABLE')"
        )
        conn.execute(
            "INSERT INTO iceberg_namespace_properties VALUES ('lake', 'login_etl', 'exists',"
            " 'true')"
        )


def contents(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table the previous release made, in a stable order."""
    return {
        t: query(url, sql.SQL("SELECT * FROM {} ORDER BY 1, 2").format(sql.Identifier(t)))
        for t in TABLES
    }


def versions(url: str) -> list[tuple[int, int]]:
    """(version, how many times recorded) for each recorded version."""
    return query(
        url,
        "SELECT version, count(*)::int FROM login_etl_schema_version GROUP BY 1 ORDER BY 1",
    )


def test_init_db_upgrades_a_previous_release_database_without_loss(etl_env, sqs_client) -> None:
    url = etl_env.database_url
    make_previous_release_database(url, etl_env.key)
    before = contents(url)
    assert all(before.values())  # every table holds a row

    done = cli(etl_env.vars(), "init-db")

    assert done.returncode == 0, done.stderr
    assert versions(url) == [(v, 1) for v in range(1, schema.latest() + 1)]
    assert contents(url) == before
    # what the previous release lacked is there now: the audit table's guard
    guard = "SELECT count(*) FROM pg_trigger WHERE tgname = 'login_etl_pii_access_rows'"
    assert scalar(url, guard) == 1
    # and a worker that changes no schema loads into it
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(3)])
    drain(etl_env.vars(), "--no-init-db")
    assert scalar(url, "SELECT count(*) FROM user_logins") == 4
    assert cli(etl_env.vars(), "init-db").returncode == 0  # a second init-db applies nothing
    assert versions(url) == [(v, 1) for v in range(1, schema.latest() + 1)]


def test_two_init_db_at_once_apply_each_migration_once(database_url) -> None:
    lock = "SELECT pg_advisory_lock(hashtext('login-etl schema'))"
    waiting = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    errors: list[BaseException] = []

    def init() -> None:
        try:
            with session(database_url) as conn:
                init_schema(conn)
        except BaseException as exc:
            errors.append(exc)

    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(lock)  # both start while the lock is taken...
        threads = [threading.Thread(target=init) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: scalar(database_url, waiting) == 2, 30, "both init-db to wait")
        holder.execute("SELECT pg_advisory_unlock(hashtext('login-etl schema'))")  # ...and race
        for t in threads:
            t.join(60)
    assert errors == []
    assert versions(database_url) == [(v, 1) for v in range(1, schema.latest() + 1)]


def test_run_refuses_a_database_newer_than_it_knows(etl_env) -> None:
    assert cli(etl_env.vars(), "init-db").returncode == 0
    newer = schema.latest() + 1
    with psycopg.connect(etl_env.database_url) as conn:
        conn.execute("INSERT INTO login_etl_schema_version (version) VALUES (%s)", (newer,))
    expected = (
        f"login-etl: error: the database schema is version {newer}; this login-etl knows up to "
        f"{schema.latest()}: upgrade login-etl"
    )
    for args in (("init-db",), ("run", "--drain"), ("run", "--drain", "--no-init-db")):
        done = cli(etl_env.vars(), *args)
        assert done.returncode == 2, done.stderr
        assert error_lines(done.stderr) == [expected]
        assert "Traceback" not in done.stderr
    assert versions(etl_env.database_url)[-1] == (newer, 1)  # nothing applied or undone


def test_the_lambda_handler_checks_the_version_too(etl_env, sqs_client) -> None:
    """It never runs init-db: a database behind or ahead of it fails the invocation."""
    url = etl_env.database_url
    make_previous_release_database(url, etl_env.key)
    handler = Handler({"LOGIN_ETL_DATABASE_URL": url, "LOGIN_ETL_MASKING_KEY": etl_env.key})
    try:
        ev = delivered(sqs_client, etl_env.queue_url, [event(1)])
        with pytest.raises(ConfigError, match="version 0 and this login-etl needs"):
            handler(ev, Context())
        assert cli(etl_env.vars(), "init-db").returncode == 0
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO login_etl_schema_version (version) VALUES (%s)", (schema.latest() + 1,)
            )
        with pytest.raises(ConfigError, match="knows up to .*: upgrade login-etl"):
            handler(ev, Context())
    finally:
        handler.close()
    assert scalar(url, "SELECT count(*) FROM user_logins") == 1  # nothing loaded


def test_a_worker_with_no_init_db_asks_for_init_db_when_migrations_are_pending(
    etl_env, sqs_client
) -> None:
    make_previous_release_database(etl_env.database_url, etl_env.key)
    send(sqs_client, etl_env.queue_url, [event(1)])

    done = cli(etl_env.vars(), "run", "--drain", "--no-init-db")

    assert done.returncode == 2, done.stderr
    [line] = error_lines(done.stderr)
    assert line.startswith(
        f"login-etl: error: the database schema is version 0 and this login-etl needs "
        f"{schema.latest()}: run `login-etl init-db` once as the tables' owner"
    )
    assert "Traceback" not in done.stderr
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 1  # nothing loaded
