"""The PostgreSQL sink on a real server: durable commits, and what each kind of
server error does to a batch (retry it, reject one row, or stop).

Errors are raised by a real trigger with a chosen SQLSTATE (`RAISE ... USING
ERRCODE`), so they reach the sink exactly as psycopg delivers them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from psycopg import sql

from login_etl.dev.local import LocalPostgres
from login_etl.errors import ConfigError, DatabaseError, RetryableError, SinkUnavailable
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.pgsink import PostgresSink
from login_etl.postgres import connect, init_schema, session
from login_etl.sink import Batch
from login_etl.source import Message
from login_etl.transform import Rejection, Row, reject, transform

from .helpers import REFUSE_POISON, USER_LOGINS_DDL, cli, event, query, scalar

MASKER = Masker(decode_key(generate_key()))


def batch_of(bodies: list[str], tag: str) -> Batch:
    messages = [Message(f"{tag}-{i}", f"r-{i}", b, datetime.now(UTC)) for i, b in enumerate(bodies)]
    by_id = {m.message_id: m for m in messages}
    out = [transform(m, MASKER) for m in messages]
    return Batch(
        [r for r in out if isinstance(r, Row)],
        [r for r in out if isinstance(r, Rejection)],
        lambda mid, why: reject(by_id[mid], why, MASKER),
    )


def execute(url: str, statement: str) -> None:
    with connect(url) as conn:
        conn.autocommit = True
        conn.execute(statement)


# -- durability ------------------------------------------------------------------


def test_every_batch_commits_with_synchronous_commit_on(database_url: str) -> None:
    # The premise: this server's default is off (throwaway data, speed on).
    assert scalar(database_url, "SHOW synchronous_commit") == "off"
    execute(database_url, USER_LOGINS_DDL)
    with connect(database_url) as conn:
        conn.autocommit = True
        init_schema(conn)
        # Record, inside each transaction that writes the ledger, the setting it
        # runs with; a rolled-back attempt leaves no record.
        conn.execute(
            """
            CREATE TABLE commit_settings (txid bigint, setting text);
            CREATE FUNCTION record_setting() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO commit_settings
                VALUES (txid_current(), current_setting('synchronous_commit'));
                RETURN NULL;
            END $$;
            CREATE TRIGGER record_setting AFTER INSERT ON login_etl_ledger
                FOR EACH STATEMENT EXECUTE FUNCTION record_setting();
            """
        )
        conn.execute(REFUSE_POISON)
    sink = PostgresSink(database_url)
    try:
        plain = sink.write(batch_of([event(i) for i in range(5)], "plain"))
        # A refused row sends the batch down the second path (isolate, then commit).
        isolated = sink.write(batch_of([event(10), event(11, user_id="poison")], "isolated"))
        rejections_only = sink.write(batch_of(["not json"], "bad"))
    finally:
        sink.close()
    assert (plain.loaded, isolated.loaded, isolated.rejected, rejections_only.rejected) == (
        5,
        1,
        1,
        1,
    )
    seen = query(database_url, "SELECT txid, setting FROM commit_settings")
    assert len({txid for txid, _ in seen}) == 3  # one committed transaction per batch
    assert {setting for _, setting in seen} == {"on"}
    # ... and the setting was local to those transactions.
    assert scalar(database_url, "SHOW synchronous_commit") == "off"


# -- server errors, by SQLSTATE ----------------------------------------------------

# Raise `state` for the one row whose user id is 'trip'; every other row loads.
TRIP = """
CREATE FUNCTION trip() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id = 'trip' THEN
        RAISE EXCEPTION 'tripped' USING ERRCODE = {state};
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER trip BEFORE INSERT ON user_logins FOR EACH ROW EXECUTE FUNCTION trip();
"""

OUTCOMES = [
    ("08006", "retry"),
    ("08001", "retry"),
    ("40P01", "retry"),
    ("40001", "retry"),
    ("57P01", "retry"),
    ("57P03", "retry"),
    ("53300", "retry"),
    ("22001", "reject"),
    ("22P02", "reject"),
    ("23505", "reject"),
    ("23502", "reject"),
    ("P0001", "reject"),
    ("42P01", "config"),
    ("42501", "config"),
    ("28P01", "config"),
    ("3D000", "config"),
    ("0A000", "fatal"),
]


@pytest.mark.parametrize(("state", "expected"), OUTCOMES)
def test_what_a_server_error_does_to_a_batch(database_url: str, state: str, expected: str) -> None:
    execute(database_url, USER_LOGINS_DDL)
    with session(database_url) as conn:
        init_schema(conn)
        conn.execute(sql.SQL(TRIP).format(state=sql.Literal(state)))
    bodies = [event(1), event(2, user_id="trip"), event(3), "not json"]
    sink = PostgresSink(database_url)
    try:
        if expected == "reject":
            result = sink.write(batch_of(bodies, "m"))
            assert (result.loaded, result.rejected) == (2, 2)
            assert result.reasons == {f"db_error:{state}": 1, "invalid_json": 1}
            assert query(database_url, "SELECT user_id FROM user_logins ORDER BY 1") == [
                ("user-1",),
                ("user-3",),
            ]
            return
        want = {"retry": SinkUnavailable, "config": ConfigError, "fatal": DatabaseError}[expected]
        with pytest.raises(want) as info:
            sink.write(batch_of(bodies, "m"))
        assert isinstance(info.value, RetryableError) == (expected == "retry")
        assert isinstance(info.value, ConfigError) == (expected == "config")
        # Nothing of the batch was stored: not the good rows, not the rejection.
        assert scalar(database_url, "SELECT count(*) FROM login_etl_ledger") == 0
        assert scalar(database_url, "SELECT count(*) FROM user_logins") == 0
        if expected == "retry":  # ... and once the cause is gone, a retry loads it all
            execute(database_url, "DROP TRIGGER trip ON user_logins")
            result = sink.write(batch_of(bodies, "m"))
            assert (result.loaded, result.rejected) == (3, 1)
    finally:
        sink.close()


# -- logins the server refuses -------------------------------------------------------


@pytest.fixture
def password_pg(own_pg: LocalPostgres) -> LocalPostgres:
    """`own_pg`, where role `etl` (password 'right') must log in with a password."""
    hba = own_pg.data / "pg_hba.conf"
    hba.write_text("host all etl 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    with connect(own_pg.url) as conn:
        conn.autocommit = True
        conn.execute("CREATE ROLE etl LOGIN PASSWORD 'right'")
        conn.execute("CREATE ROLE locked NOLOGIN")
        conn.execute("SELECT pg_reload_conf()")
    return own_pg


@pytest.mark.parametrize(
    ("user", "dbname", "expected"),
    [
        ("etl:right", "postgres", None),
        ("etl:wrong", "postgres", "password authentication failed"),
        ("postgres", "no_such_db", 'database "no_such_db" does not exist'),
        ("ghost", "postgres", 'role "ghost" does not exist'),
        ("locked", "postgres", 'role "locked" is not permitted to log in'),
    ],
)
def test_a_refused_login_is_a_config_error(
    password_pg: LocalPostgres, user: str, dbname: str, expected: str | None
) -> None:
    url = f"postgresql://{user}@127.0.0.1:{password_pg.port}/{dbname}"
    batch = batch_of(["not json"], "m")
    sink = PostgresSink(url)
    try:
        if expected is None:
            with pytest.raises(ConfigError, match="tables missing"):  # logged in, no tables
                sink.write(batch)
            return
        with pytest.raises(ConfigError, match="PostgreSQL refused the login") as info:
            sink.write(batch)
        assert expected in str(info.value)
        assert "right" not in str(info.value) and "wrong" not in str(info.value)
    finally:
        sink.close()


def test_a_server_that_is_down_is_retryable(own_pg: LocalPostgres) -> None:
    url = own_pg.url
    own_pg.stop("immediate")
    sink = PostgresSink(url)
    try:
        with pytest.raises(SinkUnavailable, match="cannot connect to PostgreSQL"):
            sink.write(batch_of(["not json"], "m"))
    finally:
        sink.close()


def test_a_worker_whose_login_is_refused_exits_2_at_once(etl_env) -> None:
    missing = etl_env.database_url.rsplit("/", 1)[0] + "/no_such_database"
    started = time.monotonic()
    done = cli(etl_env.vars(LOGIN_ETL_DATABASE_URL=missing), "run", "--max-retry-time", "120")
    assert time.monotonic() - started < 60  # not retried as if the server were down
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("login-etl: error:"), done.stderr
    assert 'database "no_such_database" does not exist' in lines[0]
