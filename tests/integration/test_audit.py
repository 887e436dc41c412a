"""The PII access audit on real PostgreSQL, with real roles: durable, true, append-only.

A row is written only through the recording function: PostgreSQL fills the
time and the role, forces a durable commit, and refuses direct writes; the
actor, from --actor or the OS user, is checked alike; nothing is printed
before the row is committed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, sql

from login_etl import audit
from login_etl.cli import cli as login_etl
from login_etl.masking import Masker, decode_key

from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import query, revealing_commands, scalar

WHY = ("--purpose", "SEC-7: audit check")
IP = "203.0.113.9"
_names = itertools.count()


@pytest.fixture
def initialised(etl_env) -> str:
    done = cli(etl_env.vars(), "init-db")
    assert done.returncode == 0, done.stderr
    return etl_env.database_url


@pytest.fixture
def role(pg_server, etl_env) -> Iterator[str]:
    """A fresh LOGIN role, dropped afterwards with what it holds."""
    name = f"pii_recovery_{os.getpid()}_{next(_names)}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def url_as(url: str, role: str) -> str:
    """`url` logged in as `role` (the test cluster trusts loopback)."""
    return f"postgresql://{quote(role, safe='')}@{url.split('@', 1)[1]}"


def as_owner(url: str, statement: str | sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def mask_of(etl_env, value: str = IP) -> str:
    return Masker(decode_key(etl_env.key)).mask("ip", value)


def unmask(env: dict[str, str], mask: str, *extra: str) -> Any:
    return cli(env, "unmask", "--field", "ip", *WHY, *extra, mask)


def grant_recovery(etl_env, role: str) -> dict[str, str]:
    done = cli(etl_env.vars(), "grant", "recovery", role)
    assert done.returncode == 0, done.stderr
    return etl_env.vars(LOGIN_ETL_DATABASE_URL=url_as(etl_env.database_url, role))


# -- durable ------------------------------------------------------------------------

# At commit time (a deferred trigger fires just before the commit record is
# written), note the synchronous_commit the commit will run with.
NOTE_COMMIT_SETTING = """
CREATE TABLE commit_settings (setting text);
CREATE FUNCTION note_commit_setting() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO commit_settings VALUES (current_setting('synchronous_commit'));
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER note_commit_setting AFTER INSERT ON login_etl_pii_access
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION note_commit_setting();
"""


def test_the_audit_commit_is_durable_where_the_default_is_off(etl_env, initialised, role) -> None:
    db = sql.Identifier(initialised.rsplit("/", 1)[1])
    as_owner(initialised, sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(db))
    as_owner(
        initialised,
        sql.SQL("ALTER ROLE {} SET synchronous_commit = off").format(sql.Identifier(role)),
    )
    as_owner(initialised, NOTE_COMMIT_SETTING)
    recovery = grant_recovery(etl_env, role)
    # Every session of both roles starts with it off...
    for url in (initialised, url_as(initialised, role)):
        assert scalar(url, "SHOW synchronous_commit") == "off"
    # ...and each audit commit still runs with it on.
    for env in (etl_env.vars(), recovery):
        done = unmask(env, mask_of(etl_env))
        assert (done.returncode, done.stdout) == (0, f"{IP}\n"), done.stderr
    assert query(initialised, "SELECT setting FROM commit_settings") == [("on",), ("on",)]


# -- true, and written one way only -----------------------------------------------


def test_the_database_fills_time_and_role_and_refuses_forged_rows(
    etl_env, initialised, role, pg_server
) -> None:
    # As the documentation once had it: the recovery role could write the table,
    # in a database made before the schema had versions.
    as_owner(
        initialised,
        sql.SQL(
            "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON login_etl_pii_access TO {}"
        ).format(sql.Identifier(role)),
    )
    as_owner(initialised, "DROP TABLE login_etl_schema_version")
    assert cli(etl_env.vars(), "init-db").returncode == 0  # its upgrade takes the writes back
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        assert scalar(
            initialised,
            "SELECT has_table_privilege(%s, 'login_etl_pii_access', %s)",
            role,
            privilege,
        ) == (privilege == "SELECT"), privilege
    recovery = grant_recovery(etl_env, role)
    before: datetime = scalar(initialised, "SELECT now()")
    done = unmask(recovery, mask_of(etl_env), "--actor", "alice")
    assert done.returncode == 0, done.stderr
    after: datetime = scalar(initialised, "SELECT now()")
    ((at, actor, db_role),) = query(
        initialised, "SELECT accessed_at, actor, db_role FROM login_etl_pii_access"
    )
    assert (actor, db_role) == ("alice", role) and before <= at <= after
    for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
        assert not scalar(
            initialised,
            "SELECT has_table_privilege(%s, 'login_etl_pii_access', %s)",
            role,
            privilege,
        ), privilege
    # Nobody but the grant holds the recording function (PUBLIC does not).
    as_owner(
        initialised,
        sql.SQL(
            "REVOKE ALL ON FUNCTION login_etl_record_pii_access("
            "text, text, text, integer, text, varchar) FROM {}"
        ).format(sql.Identifier(role)),
    )
    assert not scalar(
        initialised,
        "SELECT has_function_privilege(%s, 'login_etl_record_pii_access("
        "text, text, text, integer, text, varchar)', 'EXECUTE')",
        role,
    )
    # A role that bypasses grants (pg_write_all_data) is held by the table's trigger.
    as_owner(
        pg_server.url,
        sql.SQL("GRANT pg_write_all_data, pg_read_all_data TO {}").format(sql.Identifier(role)),
    )
    forged = (
        "INSERT INTO login_etl_pii_access"
        " (accessed_at, actor, db_role, command, field, value_count, purpose)"
        " VALUES ('2001-01-01', 'someone', 'postgres', 'unmask', 'ip', 0, 'forged')"
    )
    for statement in (
        forged,
        "UPDATE login_etl_pii_access SET accessed_at = '2001-01-01', db_role = 'postgres'",
        "DELETE FROM login_etl_pii_access",
        "TRUNCATE login_etl_pii_access",
    ):
        with (
            pytest.raises(errors.InsufficientPrivilege),
            psycopg.connect(url_as(initialised, role)) as conn,
        ):
            conn.execute(statement)
    assert query(initialised, "SELECT accessed_at, actor, db_role FROM login_etl_pii_access") == [
        (at, "alice", role)
    ]
    # Even the owner's own direct insert gets the true time and role.
    as_owner(initialised, forged)
    assert query(
        initialised,
        "SELECT accessed_at > '2001-01-02', db_role FROM login_etl_pii_access"
        " WHERE purpose = 'forged'",
    ) == [(True, "postgres")]


RECORD = (
    "SELECT db_role, accessed_at FROM login_etl_record_pii_access("
    "'alice', 'unmask --field', 'ip', 1, 'direct call', NULL)"
)


def test_a_replica_session_still_gets_its_own_role(etl_env, initialised, role, pg_server) -> None:
    # Allowed to set session_replication_role (a superuser's grant), the
    # recovery role's calls still pass the trigger: db_role is its own, not the
    # owner's (the column default, inside the SECURITY DEFINER function).
    grant_recovery(etl_env, role)
    as_owner(
        pg_server.url,
        sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(
            sql.Identifier(role)
        ),
    )
    try:
        with psycopg.connect(url_as(initialised, role), autocommit=True) as conn:
            conn.execute("SET session_replication_role = replica")
            row = conn.execute(RECORD).fetchone()
            assert row is not None and row[0] == role
    finally:
        as_owner(
            pg_server.url,
            sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(
                sql.Identifier(role)
            ),
        )
    assert query(initialised, "SELECT db_role FROM login_etl_pii_access") == [(role,)]


def test_a_call_late_in_a_long_transaction_is_not_backdated(etl_env, initialised, role) -> None:
    grant_recovery(etl_env, role)
    with psycopg.connect(url_as(initialised, role)) as conn:
        began: datetime = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        # Wait until the clock has moved past the transaction's start.
        while conn.execute("SELECT clock_timestamp() <= %s", (began,)).fetchone()[0]:  # type: ignore[index]
            pass
        conn.execute(RECORD)
        conn.commit()
    ((at,),) = query(initialised, "SELECT accessed_at FROM login_etl_pii_access")
    assert at > began


# -- the actor -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["alice\u202eecila", "alice\nINFO forged line", "a" * 5000, "  "],
    ids=["bidi-override", "newline", "5000-chars", "blank"],
)
def test_the_os_user_is_checked_like_actor(etl_env, initialised, name) -> None:
    done = unmask(etl_env.vars(LOGNAME=name, USER=name), mask_of(etl_env))
    assert done.returncode == 2 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("login-etl: error: the OS user name") and "--actor" in line
    assert IP not in done.stderr and "alice" not in line
    assert query(initialised, "SELECT count(*) FROM login_etl_pii_access") == [(0,)]
    # --actor still names someone when the OS user cannot.
    named = unmask(etl_env.vars(LOGNAME=name, USER=name), mask_of(etl_env), "--actor", "bob")
    assert named.returncode == 0, named.stderr
    assert query(initialised, "SELECT actor FROM login_etl_pii_access") == [("bob",)]


@pytest.mark.parametrize(
    ("flag", "limit"), [("--purpose", audit.MAX_PURPOSE), ("--actor", audit.MAX_ACTOR)]
)
def test_purpose_and_actor_are_bounded(etl_env, initialised, flag, limit) -> None:
    assert (audit.MAX_PURPOSE, audit.MAX_ACTOR) == (1000, 128)  # as documented
    mask = mask_of(etl_env)
    over = cli(etl_env.vars(), "unmask", "--field", "ip", *WHY, flag, "x" * (limit + 1), mask)
    assert over.returncode == 2 and over.stdout == ""
    (line,) = over.stderr.strip().splitlines()
    assert f"{flag} is longer than {limit} characters" in line
    assert query(initialised, "SELECT count(*) FROM login_etl_pii_access") == [(0,)]
    at = cli(etl_env.vars(), "unmask", "--field", "ip", *WHY, flag, "x" * limit, mask)
    assert (at.returncode, at.stdout) == (0, f"{IP}\n"), at.stderr
    column = flag.removeprefix("--")
    assert query(initialised, f"SELECT length({column}) FROM login_etl_pii_access") == [(limit,)]


# -- committed before anything is printed ----------------------------------------------


def test_record_commits_the_row_before_it_returns(etl_env, initialised) -> None:
    access = audit.Access("alice", "unmask", "ip", 1, "SEC-7")
    with psycopg.connect(initialised) as conn:
        recorded = audit.record(conn, access)
        # Seen from another connection while this one is still open.
        assert query(initialised, "SELECT id, actor FROM login_etl_pii_access") == [
            (recorded.id, "alice")
        ]


@revealing_commands(*WHY)
def test_the_audit_row_is_committed_before_the_first_output(
    etl_env, initialised, monkeypatch, command
) -> None:
    # The printing side looks at the database, from another connection, the
    # moment the command first writes to stdout.
    masker = Masker(decode_key(etl_env.key))
    as_owner(
        initialised,
        sql.SQL("INSERT INTO user_logins (user_id, masked_ip) VALUES ('user-1', {})").format(
            sql.Literal(mask_of(etl_env))
        ),
    )
    as_owner(
        initialised,
        sql.SQL(
            "INSERT INTO user_logins_rejected (message_id, reason, sent_at, sealed_body)"
            " VALUES ('m-1', 'invalid_json', now(), {})"
        ).format(sql.Literal(masker.seal(b"not json", "m-1"))),
    )
    seen: list[int] = []
    echo = click.echo

    def watching_echo(*args: Any, **kwargs: Any) -> None:
        if not kwargs.get("err") and not seen:
            seen.append(scalar(initialised, "SELECT count(*) FROM login_etl_pii_access"))
        echo(*args, **kwargs)

    monkeypatch.setattr(click, "echo", watching_echo)
    args = [mask_of(etl_env) if a == "MASK" else a for a in command]
    result = CliRunner().invoke(login_etl, args, prog_name="login-etl")
    assert result.exit_code == 0, (result.output, result.exception)
    assert seen == [1]
