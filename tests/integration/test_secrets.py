"""No password in any output: database URLs typed wrong, through every command.

A dedicated PostgreSQL server that checks passwords (scram-sha-256 on TCP);
each URL carries a random password. Whatever the command and log format,
the password appears nowhere in stdout or stderr, a configuration mistake
exits 2 at once (never retried), and an unreachable server exits 1 after
--max-retry-time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from login_etl.dev.local import LocalPostgres

from .conftest import unique_name
from .helpers import Env, cli, cli_in_process

PASSWORD = "pw-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def scram_pg() -> Iterator[LocalPostgres]:
    """A server whose TCP connections need the password (the shared one trusts everyone)."""
    with LocalPostgres() as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        (pg.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        pg._pg("pg_ctl", "reload", "-D", str(pg.data))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # reload is asynchronous
            try:
                psycopg.connect(pg.url, connect_timeout=2).close()
            except psycopg.OperationalError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("pg_hba.conf reload did not take effect")
        yield pg


@pytest.fixture
def scram_db(scram_pg: LocalPostgres) -> Iterator[str]:
    """A fresh database on that server for one test: init-db and run change what they find."""
    name = unique_name("secrets").replace("-", "_")
    with psycopg.connect(good_url(scram_pg, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(good_url(scram_pg, "postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def good_url(pg: LocalPostgres, dbname: str) -> str:
    """The right URL, password included, over TCP."""
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/{dbname}"


def urls(pg: LocalPostgres, dbname: str) -> dict[str, tuple[str, int]]:
    """name → (URL with the password, expected exit code)."""
    good = good_url(pg, dbname)
    return {
        "quoted": (f'"{good}"', 2),
        "single-quoted": (f"'{good}'", 2),
        "missing-colon": (good.replace("postgresql://", "postgresql//"), 2),
        "bad-port": (good.replace(f":{pg.port}/", ":99999/"), 2),
        "non-numeric-port": (good.replace(f":{pg.port}/", ":54x2/"), 2),
        "wrong-password": (good.replace(PASSWORD, PASSWORD[::-1]), 2),
        "password-keyword-typo": (f"host=127.0.0.1 port={pg.port} pasword={PASSWORD}", 2),
        "unreachable": (good.replace("127.0.0.1", "127.0.0.2").replace(f":{pg.port}", ":1"), 1),
        "sslmode-typo": (good + "?sslmode=bogus", 2),
        "server-option-typo": (good + "?options=-c%20no_such_setting%3Don", 2),
        "trailing-quote": (good + '"', 2),
        "percent-encoded-password": (
            f"postgresql://postgres@127.0.0.1:{pg.port}/{dbname}?%70assword={PASSWORD[::-1]}",
            2,
        ),
    }


COMMANDS = {
    "run": ["run", "--drain", "--max-retry-time", "2"],
    "status": ["status"],
    "init-db": ["init-db"],
    "rejects": ["rejects", "list"],
    "prune": ["prune", "--retention", "3600", "--force"],
}


def check_no_password(
    pg: LocalPostgres, dbname: str, env: Env, command: str, fmt: str, run
) -> None:
    """Every wrong URL through `command`: no password anywhere, one error line, its exit code."""
    for name, (url, code) in urls(pg, dbname).items():
        if command != "run" and name == "unreachable":
            code = 1  # admin commands do not retry: one attempt, exit 1
        env_vars = env.vars(
            LOGIN_ETL_DATABASE_URL=url, LOGIN_ETL_LOG_FORMAT=fmt, LOGIN_ETL_MAX_RETRY_TIME="2"
        )
        done = run(env_vars, *COMMANDS[command])
        output = done.stdout + done.stderr
        assert PASSWORD not in output, (name, output)
        assert PASSWORD[::-1] not in output, (name, output)
        assert "Traceback" not in output, (name, output)
        assert done.returncode == code, (name, done.returncode, output)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("login-etl: error: "), (name, output)
        if code == 2:
            assert "retrying" not in output, (name, output)  # never retried


# In-process: what each command prints and its exit code are the subject here, and
# 120 Python start-ups would prove nothing more. The real process is checked below.
@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_password_in_any_output(scram_pg, scram_db, etl_env, command: str, fmt: str) -> None:
    check_no_password(scram_pg, scram_db, etl_env, command, fmt, cli_in_process)


def test_no_password_from_a_real_process(scram_pg, scram_db, etl_env) -> None:
    """The same for a real `login-etl run`: what only a process prints (start-up, an
    uncaught exception, interpreter exit) and its exit status."""
    check_no_password(
        scram_pg, scram_db, etl_env, "run", "text", lambda env, *args: cli(env, *args, timeout=60)
    )


def test_the_right_password_from_a_file_works(scram_pg, scram_db, etl_env, tmp_path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text(good_url(scram_pg, scram_db) + "\n")
    secret.chmod(0o600)
    env = etl_env.vars(LOGIN_ETL_DATABASE_URL_FILE=str(secret), LOGIN_ETL_LOG_FORMAT="json")
    del env["LOGIN_ETL_DATABASE_URL"]
    done = cli(env, "init-db")
    assert done.returncode == 0, done.stderr
    done = cli(env, "run", "--drain")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert '"msg": "worker stopped"' in done.stderr


def test_a_password_on_the_command_line_is_refused(scram_pg, scram_db, etl_env) -> None:
    url = good_url(scram_pg, scram_db)
    done = cli(etl_env.vars(), "status", "--database-url", url)
    assert done.returncode == 2
    assert PASSWORD not in done.stdout + done.stderr
    assert "LOGIN_ETL_DATABASE_URL_FILE" in done.stderr
