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

from login_etl.dev.local import LocalPostgres

from .helpers import cli

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


def urls(pg: LocalPostgres) -> dict[str, tuple[str, int]]:
    """name → (URL with the password, expected exit code)."""
    good = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{pg.port}/postgres"
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
            f"postgresql://postgres@127.0.0.1:{pg.port}/postgres?%70assword={PASSWORD[::-1]}",
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


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_password_in_any_output(scram_pg, etl_env, command: str, fmt: str) -> None:
    for name, (url, code) in urls(scram_pg).items():
        if command != "run" and name == "unreachable":
            code = 1  # admin commands do not retry: one attempt, exit 1
        env = etl_env.vars(
            LOGIN_ETL_DATABASE_URL=url, LOGIN_ETL_LOG_FORMAT=fmt, LOGIN_ETL_MAX_RETRY_TIME="2"
        )
        started = time.monotonic()
        done = cli(env, *COMMANDS[command], timeout=60)
        elapsed = time.monotonic() - started
        output = done.stdout + done.stderr
        assert PASSWORD not in output, (name, output)
        assert PASSWORD[::-1] not in output, (name, output)
        assert "Traceback" not in output, (name, output)
        assert done.returncode == code, (name, done.returncode, output)
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("login-etl: error: "), (name, output)
        if code == 2:
            assert elapsed < 15, (name, elapsed)  # never retried


def test_the_right_password_from_a_file_works(scram_pg, etl_env, tmp_path) -> None:
    secret = tmp_path / "db-url"
    secret.write_text(f"postgresql://postgres:{PASSWORD}@127.0.0.1:{scram_pg.port}/postgres\n")
    secret.chmod(0o600)
    env = etl_env.vars(LOGIN_ETL_DATABASE_URL_FILE=str(secret), LOGIN_ETL_LOG_FORMAT="json")
    del env["LOGIN_ETL_DATABASE_URL"]
    done = cli(env, "init-db")
    assert done.returncode == 0, done.stderr
    done = cli(env, "run", "--drain")
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert '"msg": "worker stopped"' in done.stderr


def test_a_password_on_the_command_line_is_refused(scram_pg, etl_env) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{scram_pg.port}/postgres"
    done = cli(etl_env.vars(), "status", "--database-url", url)
    assert done.returncode == 2
    assert PASSWORD not in done.stdout + done.stderr
    assert "LOGIN_ETL_DATABASE_URL_FILE" in done.stderr
