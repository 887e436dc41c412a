"""Least privilege with real PostgreSQL roles: `login-etl grant writer|analyst ROLE`.

The owner (the cluster's `postgres`) runs init-db and grant; a worker then
runs as the writer role with --no-init-db, and an analyst reads masks only.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg import errors, sql

from login_etl.lake.table import Lake

from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import event, query, scalar, send

_names = itertools.count()
WHY = ("--purpose", "grant check")


@pytest.fixture
def roles(etl_env, pg_server) -> Iterator[dict[str, str]]:
    """Two fresh LOGIN roles (writer, analyst) and an odd-named third, dropped afterwards."""
    tag = f"{os.getpid()}_{next(_names)}"
    names = {
        "writer": f"etl_writer_{tag}",
        "analyst": f"etl_analyst_{tag}",
        "odd": f'odd "role"; DROP TABLE user_logins; -- {tag}',
    }
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield names
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        for name in names.values():  # privileges in this database and on it
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def url_as(etl_env, role: str) -> str:
    """The test database's URL, logged in as `role` (the cluster trusts loopback)."""
    rest = etl_env.database_url.split("@", 1)[1]
    return f"postgresql://{quote(role, safe='')}@{rest}"


def owner_grants(etl_env, kind: str, role: str) -> None:
    done = cli(etl_env.vars(), "grant", kind, role)
    assert done.returncode == 0, done.stderr
    assert f"now has the {kind} privileges" in done.stdout


def refused(url: str, statement: str) -> bool:
    """True when PostgreSQL refuses `statement` for lack of privilege (or ownership)."""
    try:
        with psycopg.connect(url) as conn:
            conn.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    return False


@pytest.fixture
def initialised(etl_env) -> None:
    done = cli(etl_env.vars(), "init-db")
    assert done.returncode == 0, done.stderr


def test_a_writer_runs_the_worker_with_no_init_db(etl_env, sqs_client, roles, initialised) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    worker = etl_env.vars(LOGIN_ETL_DATABASE_URL=url_as(etl_env, roles["writer"]))
    send(sqs_client, etl_env.queue_url, [event(1), event(2), "not json"])
    done = cli(worker, "run", "--drain", "--no-init-db")
    assert done.returncode == 0, done.stderr
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 2
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins_rejected") == 1
    # A redelivered message is skipped through the ledger the writer reads.
    send(sqs_client, etl_env.queue_url, [event(3)])
    assert cli(worker, "run", "--drain", "--no-init-db").returncode == 0
    # The worker's other duties: prune the ledger, replay rejections, report status.
    pruned = cli(worker, "prune", "--retention", "60", "--force")
    assert pruned.returncode == 0, pruned.stderr
    replayed = cli(worker, "rejects", "replay")
    assert replayed.returncode == 0, replayed.stderr
    status = cli(worker, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["rows_loaded"] == 3


def test_a_writer_runs_the_worker_with_the_lake_on(
    etl_env, sqs_client, roles, initialised, tmp_path
) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    warehouse = f"file://{tmp_path}/warehouse"
    worker = etl_env.vars(
        LOGIN_ETL_DATABASE_URL=url_as(etl_env, roles["writer"]),
        LOGIN_ETL_LAKE_WAREHOUSE=warehouse,
    )
    for batch in (range(3), range(3, 5)):  # two passes: two files for the one date
        send(sqs_client, etl_env.queue_url, [event(i) for i in batch])
        done = cli(worker, "run", "--drain", "--no-init-db")
        assert done.returncode == 0, done.stderr
        flushed = cli(worker, "lake", "flush")
        assert flushed.returncode == 0, flushed.stderr
    assert scalar(etl_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 0
    # The daily upkeep needs no more than the writer's privileges either (the
    # catalog tables and the lock), and no key: deploy/kubernetes/lake-maintain.yaml.
    upkeep = {k: v for k, v in worker.items() if "MASKING" not in k}
    maintained = cli(upkeep, "lake", "maintain", "--older-than-seconds", "0", "--retain-last", "1")
    assert maintained.returncode == 0, maintained.stderr
    # Compacted: one file per create_date (the two passes share one, but for midnight UTC).
    dates = scalar(etl_env.database_url, "SELECT count(DISTINCT create_date) FROM user_logins")
    assert f"; {dates} data files" in maintained.stdout, maintained.stdout
    lake = Lake(etl_env.database_url, warehouse)
    try:
        users = sorted(r["user_id"] for r in lake.table().scan().to_arrow().to_pylist())
    finally:
        lake.close()
    assert users == [f"user-{i}" for i in range(5)]


def test_a_writer_has_no_ddl_and_cannot_change_loaded_rows(
    etl_env, sqs_client, roles, initialised
) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    url = url_as(etl_env, roles["writer"])
    for statement in (
        "CREATE TABLE intruder (x int)",
        "ALTER TABLE user_logins ADD COLUMN ip text",
        "DROP TABLE login_etl_ledger",
        "TRUNCATE user_logins",
        "UPDATE user_logins SET masked_ip = NULL",
        "DELETE FROM user_logins",
        "SELECT * FROM login_etl_pii_access",
        "INSERT INTO login_etl_pii_access (actor, command, field, value_count, purpose)"
        " VALUES ('w', 'c', 'f', 0, 'p')",
        "CREATE INDEX ON user_logins (user_id)",
    ):
        assert refused(url, statement), statement
    # What it has: temporary tables and the DML of its own tables.
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TEMP TABLE scratch (x int)")
        conn.execute("DELETE FROM login_etl_ledger WHERE false")
        conn.execute("UPDATE user_logins_rejected SET reason = reason WHERE false")


def test_the_worker_without_no_init_db_says_what_to_do(
    etl_env, sqs_client, roles, initialised
) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    send(sqs_client, etl_env.queue_url, [event(1)])
    worker = etl_env.vars(LOGIN_ETL_DATABASE_URL=url_as(etl_env, roles["writer"]))
    done = cli(worker, "run", "--drain")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert line.startswith("login-etl: error: init-db: ") and "may not create" in line
    assert "`login-etl init-db` once as the tables' owner" in line and "--no-init-db" in line
    assert "login-etl grant" not in line  # the grant was done: it is not the fix
    # and the advice works: the same role loads with --no-init-db
    assert cli(worker, "run", "--drain", "--no-init-db").returncode == 0
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 1


def test_worker_credentials_cannot_reveal_pii(etl_env, sqs_client, roles, initialised) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    send(sqs_client, etl_env.queue_url, [event(1, ip="203.0.113.50")])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    (mask,) = query(etl_env.database_url, "SELECT masked_ip FROM user_logins")[0]
    worker = etl_env.vars(LOGIN_ETL_DATABASE_URL=url_as(etl_env, roles["writer"]))
    done = cli(worker, "unmask", "--field", "ip", *WHY, mask)
    assert done.returncode == 2  # the audit insert is denied, so nothing is shown
    assert done.stdout == "" and "203.0.113.50" not in done.stderr
    assert "permission denied" in done.stderr


def test_an_analyst_reads_masks_and_nothing_else(etl_env, sqs_client, roles, initialised) -> None:
    owner_grants(etl_env, "analyst", roles["analyst"])
    send(sqs_client, etl_env.queue_url, [event(1), "not json"])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    url = url_as(etl_env, roles["analyst"])
    rows = query(url, "SELECT masked_ip, count(*) FROM user_logins GROUP BY masked_ip")
    assert len(rows) == 1
    for statement in (
        "SELECT sealed_body FROM user_logins_rejected",
        "SELECT * FROM login_etl_ledger",
        "SELECT * FROM login_etl_pii_access",
        "INSERT INTO user_logins (user_id) VALUES ('x')",
        "UPDATE user_logins SET user_id = 'x'",
        "CREATE TABLE intruder (x int)",
    ):
        assert refused(url, statement), statement
    # And through the CLI: no bodies, no status of the service's tables.
    analyst = etl_env.vars(LOGIN_ETL_DATABASE_URL=url)
    listed = cli(analyst, "rejects", "list", "--show-bodies", *WHY)
    assert listed.returncode == 2 and "permission denied" in listed.stderr


def test_a_writer_regranted_as_analyst_keeps_nothing_of_the_writer(
    etl_env, roles, initialised
) -> None:
    owner_grants(etl_env, "writer", roles["writer"])
    owner_grants(etl_env, "analyst", roles["writer"])
    url = url_as(etl_env, roles["writer"])
    assert refused(url, "INSERT INTO user_logins (user_id) VALUES ('x')")
    assert refused(url, "SELECT * FROM login_etl_ledger")
    assert query(url, "SELECT count(*) FROM user_logins") == [(0,)]
    privileges = query(
        etl_env.database_url,
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s ORDER BY 1, 2",
        roles["writer"],
    )
    assert privileges == [("user_logins", "SELECT")]
    # Nor what the writer held beyond tables: the outbox's sequence, temporary tables.
    assert not scalar(
        etl_env.database_url,
        "SELECT has_sequence_privilege(%s, 'login_etl_lake_outbox_id_seq', 'USAGE')",
        roles["writer"],
    )
    on_database = query(
        etl_env.database_url,
        "SELECT a.privilege_type FROM pg_database d, aclexplode(d.datacl) a"
        " WHERE d.datname = current_database()"
        " AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1",
        roles["writer"],
    )
    assert on_database == [("CONNECT",)]  # granted to the role itself (PUBLIC's aside)


def test_granting_is_idempotent_and_exact(etl_env, roles, initialised) -> None:
    for _ in range(2):
        owner_grants(etl_env, "writer", roles["writer"])
    privileges = query(
        etl_env.database_url,
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s ORDER BY 1, 2",
        roles["writer"],
    )
    expected = [("user_logins", p) for p in ("INSERT", "SELECT")]
    expected += [("login_etl_schema_version", "SELECT")]  # checked before the first write
    expected += [("login_etl_lake_outbox", p) for p in ("DELETE", "INSERT", "SELECT")]
    for table in (
        "login_etl_ledger",
        "user_logins_rejected",
        "iceberg_tables",
        "iceberg_namespace_properties",
    ):
        expected += [(table, p) for p in ("DELETE", "INSERT", "SELECT", "UPDATE")]
    assert privileges == sorted(expected)


def test_a_role_name_is_an_identifier_never_sql(etl_env, roles, initialised) -> None:
    owner_grants(etl_env, "analyst", roles["odd"])
    assert scalar(etl_env.database_url, "SELECT to_regclass('user_logins') IS NOT NULL")
    assert query(url_as(etl_env, roles["odd"]), "SELECT count(*) FROM user_logins") == [(0,)]


@pytest.mark.parametrize(
    ("role", "fragment"),
    [
        ("no_such_role_anywhere", "no such PostgreSQL role"),
        ("postgres", "superuser"),
    ],
)
def test_grant_refusals(etl_env, initialised, role, fragment) -> None:
    done = cli(etl_env.vars(), "grant", "writer", role)
    assert done.returncode == 2
    assert fragment in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_grant_to_a_member_of_the_owner_is_refused(etl_env, roles, initialised, pg_server) -> None:
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT postgres TO {}").format(sql.Identifier(roles["writer"])))
    done = cli(etl_env.vars(), "grant", "writer", roles["writer"])
    assert done.returncode == 2 and "owns the service's tables" in done.stderr
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE postgres FROM {}").format(sql.Identifier(roles["writer"])))


def test_grant_before_init_db_says_so(etl_env, roles) -> None:
    done = cli(etl_env.vars(), "grant", "analyst", roles["analyst"])
    assert done.returncode == 2
    assert "init-db" in done.stderr


def test_the_recovery_role_can_reveal_and_is_named_in_the_audit(
    etl_env, sqs_client, roles, initialised
) -> None:
    # docs/security.md, "A dedicated recovery role".
    owner_grants(etl_env, "recovery", roles["odd"])
    send(sqs_client, etl_env.queue_url, [event(1, ip="203.0.113.51"), "not json"])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    (mask,) = query(etl_env.database_url, "SELECT masked_ip FROM user_logins")[0]
    recovery = etl_env.vars(LOGIN_ETL_DATABASE_URL=url_as(etl_env, roles["odd"]))
    done = cli(recovery, "unmask", "--field", "ip", *WHY, mask)
    assert (done.returncode, done.stdout) == (0, "203.0.113.51\n"), done.stderr
    bodies = cli(recovery, "rejects", "list", "--json", "--show-bodies", *WHY)
    assert bodies.returncode == 0, bodies.stderr
    assert query(etl_env.database_url, "SELECT db_role FROM login_etl_pii_access") == [
        (roles["odd"],),
        (roles["odd"],),
    ]
    url = url_as(etl_env, roles["odd"])
    for statement in (
        "SELECT * FROM login_etl_pii_access",
        "SELECT * FROM login_etl_ledger",
        "INSERT INTO user_logins (user_id) VALUES ('x')",
        "INSERT INTO login_etl_pii_access (actor, command, field, value_count, purpose)"
        " VALUES ('w', 'c', 'f', 0, 'p')",
        "DELETE FROM login_etl_pii_access",
    ):
        assert refused(url, statement), statement


def as_superuser(pg_server, url: str | None, statement: str, **names: str) -> None:
    """Run `statement` with role names filled in as identifiers (in `url`'s database)."""
    ids = {k: sql.Identifier(v) for k, v in names.items()}
    with psycopg.connect(url or pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(**ids))


def exact_privileges(etl_env, role: str) -> list[tuple[str, str]]:
    return query(
        etl_env.database_url,
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = %s ORDER BY 1, 2",
        role,
    )


# What each setup lets the role do beyond its set, and the words naming it.
OVERREACH = {
    "read-all-data": ("GRANT pg_read_all_data TO {r}", "member of pg_read_all_data"),
    "write-all-data": ("GRANT pg_write_all_data TO {r}", "member of pg_write_all_data"),
    "read-server-files": ("GRANT pg_read_server_files TO {r}", "member of pg_read_server_files"),
    "write-server-files": (
        "GRANT pg_write_server_files TO {r}",
        "member of pg_write_server_files",
    ),
    "server-program": (
        "GRANT pg_execute_server_program TO {r}",
        "member of pg_execute_server_program",
    ),
    "monitor": ("GRANT pg_monitor TO {r}", "member of pg_read_all_stats"),
    "createrole": ("ALTER ROLE {r} CREATEROLE", "has CREATEROLE"),
    "bypassrls": ("ALTER ROLE {r} BYPASSRLS", "has BYPASSRLS"),
    "replication": ("ALTER ROLE {r} REPLICATION", "has REPLICATION"),
    "inherited": (
        "GRANT pg_read_all_data TO {other}; GRANT {other} TO {r}",
        "member of pg_read_all_data",
    ),
    "noinherit-set-role": (
        "ALTER ROLE {r} NOINHERIT; GRANT pg_read_all_data TO {r}",
        "member of pg_read_all_data",
    ),
    "alter-system-parameter": (
        "GRANT ALTER SYSTEM ON PARAMETER archive_command TO {r}",
        "may ALTER SYSTEM parameter archive_command",
    ),
    "set-parameter-via-membership": (
        "GRANT SET ON PARAMETER session_replication_role TO {other}; GRANT {other} TO {r}",
        "may SET parameter session_replication_role",
    ),
    "attribute-via-membership": (
        "ALTER ROLE {other} CREATEROLE; GRANT {other} TO {r}",
        "which has CREATEROLE",
    ),
}


@pytest.mark.parametrize("case", list(OVERREACH))
def test_grant_refuses_a_role_that_can_read_more_or_raise_itself(
    etl_env, roles, initialised, pg_server, case
) -> None:
    setup, fragment = OVERREACH[case]
    as_superuser(pg_server, None, setup, r=roles["analyst"], other=roles["writer"])
    done = cli(etl_env.vars(), "grant", "analyst", roles["analyst"])
    assert done.returncode == 2, done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("login-etl: error: that role") and fragment in line, line
    assert exact_privileges(etl_env, roles["analyst"]) == []


@pytest.mark.parametrize("kind", ["writer", "recovery"])
def test_every_kind_is_refused_to_an_overreaching_role(
    etl_env, roles, initialised, pg_server, kind
) -> None:
    as_superuser(pg_server, None, "GRANT pg_write_all_data TO {r}", r=roles["analyst"])
    done = cli(etl_env.vars(), "grant", kind, roles["analyst"])
    assert done.returncode == 2 and "pg_write_all_data" in done.stderr


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        ("ALTER TABLE login_etl_pii_access OWNER TO {r}", "owns the service's tables"),
        ("ALTER SCHEMA public OWNER TO {r}", "owns schema public"),
    ],
    ids=["one-of-the-tables", "the-schema"],
)
def test_grant_refuses_an_owner_of_what_the_set_protects(
    etl_env, roles, initialised, pg_server, setup, fragment
) -> None:
    as_superuser(pg_server, etl_env.database_url, setup, r=roles["analyst"])
    done = cli(etl_env.vars(), "grant", "analyst", roles["analyst"])
    assert done.returncode == 2 and fragment in done.stderr, done.stderr
    as_superuser(pg_server, etl_env.database_url, "ALTER SCHEMA public OWNER TO pg_database_owner")


def test_grant_refuses_a_role_that_can_plant_objects_in_another_roles_path(
    etl_env, roles, initialised, pg_server
) -> None:
    # A schema named after the writer comes first in the writer's search path
    # ("$user", public): its owner's tables would stand in for the service's.
    analyst, writer = roles["analyst"], roles["writer"]
    url = etl_env.database_url
    as_superuser(pg_server, url, "CREATE SCHEMA {w} AUTHORIZATION {a}", w=writer, a=analyst)
    try:
        done = cli(etl_env.vars(), "grant", "analyst", analyst)
        assert done.returncode == 2, done.stdout
        (line,) = done.stderr.strip().splitlines()
        assert f"may create objects in schema {writer}" in line, line
        # Its own schema reaches only its own sessions: accepted.
        as_superuser(pg_server, url, "ALTER SCHEMA {w} RENAME TO {a}", w=writer, a=analyst)
        owner_grants(etl_env, "analyst", analyst)
    finally:
        as_superuser(pg_server, url, "DROP SCHEMA IF EXISTS {w} CASCADE", w=writer)
        as_superuser(pg_server, url, "DROP SCHEMA IF EXISTS {a} CASCADE", a=analyst)


def test_grant_refuses_the_databases_owner(etl_env, roles, initialised, pg_server) -> None:
    db = etl_env.database_url.rsplit("/", 1)[1]
    as_superuser(pg_server, None, "ALTER DATABASE {db} OWNER TO {r}", db=db, r=roles["analyst"])
    try:
        done = cli(etl_env.vars(), "grant", "analyst", roles["analyst"])
    finally:
        as_superuser(pg_server, None, "ALTER DATABASE {db} OWNER TO postgres", db=db)
    assert done.returncode == 2 and "owns this database" in done.stderr, done.stderr


def test_createdb_alone_is_no_reason_to_refuse(etl_env, roles, initialised, pg_server) -> None:
    # A database of its own gives no access to this one's tables.
    as_superuser(pg_server, None, "ALTER ROLE {r} CREATEDB", r=roles["analyst"])
    owner_grants(etl_env, "analyst", roles["analyst"])
    assert exact_privileges(etl_env, roles["analyst"]) == [("user_logins", "SELECT")]


def test_a_former_recovery_role_regranted_as_analyst_keeps_nothing_of_it(
    etl_env, roles, initialised
) -> None:
    role = roles["analyst"]
    owner_grants(etl_env, "recovery", role)
    # And what the documentation once had the owner grant by hand.
    as_superuser(
        None,
        etl_env.database_url,
        "GRANT SELECT ON user_logins, user_logins_rejected TO {r};"
        " GRANT SELECT, INSERT ON login_etl_pii_access TO {r}",
        r=role,
    )
    owner_grants(etl_env, "analyst", role)
    assert exact_privileges(etl_env, role) == [("user_logins", "SELECT")]
    assert not scalar(
        etl_env.database_url,
        "SELECT has_function_privilege(%s, 'login_etl_record_pii_access("
        "text, text, text, integer, text, varchar)', 'EXECUTE')",
        role,
    )
