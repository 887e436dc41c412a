"""What a user meets when something is set up wrong: one line naming the thing and the fix.

(A writer role run without --no-init-db: tests/integration/test_grants.py.)

Through the real command (a subprocess) against real PostgreSQL and SQS.
Configuration exits 2, an outage that outlasts --max-retry-time exits 1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from login_etl.dev.local import free_port

from .helpers import cli, event, send


def error_line(stderr: str) -> str:
    """The last line, which must be the one error line."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("login-etl: error: "), stderr[-2000:]
    assert "Traceback" not in stderr
    return last


@pytest.fixture
def port_in_use() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("0.0.0.0", 0))  # noqa: S104 - where the metrics server binds
        held.listen()
        yield held.getsockname()[1]


def test_a_metrics_port_in_use_is_named_with_the_fix(etl_env, port_in_use) -> None:
    done = cli(etl_env.vars(), "run", "--drain", "--metrics-port", str(port_in_use))
    assert done.returncode == 2, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert f":{port_in_use}" in line and "in use" in line
    assert "choose another --metrics-port" in line


def test_an_unreachable_database_is_named_in_the_first_warning_and_the_error(etl_env) -> None:
    port = free_port()
    url = f"postgresql://postgres:pw-not-shown@127.0.0.1:{port}/postgres"
    env = etl_env.vars(LOGIN_ETL_DATABASE_URL=url, LOGIN_ETL_MAX_RETRY_TIME="2")
    done = cli(env, "run", "--drain")
    assert done.returncode == 1, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if "retrying" in line]
    assert warnings, done.stderr[-2000:]
    assert f"PostgreSQL at 127.0.0.1:{port}" in warnings[0]
    assert "for up to 2s more of --max-retry-time 2s" in warnings[0]
    line = error_line(done.stderr)
    assert f"PostgreSQL at 127.0.0.1:{port}" in line and "gave up after 2s" in line
    assert "pw-not-shown" not in done.stderr


def test_an_unreachable_sqs_endpoint_is_named(etl_env) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    env = etl_env.vars(AWS_ENDPOINT_URL=endpoint, LOGIN_ETL_MAX_RETRY_TIME="2")
    done = cli(env, "run", "--drain")
    assert done.returncode == 1, done.stderr[-2000:]
    line = error_line(done.stderr)
    assert f"cannot reach {endpoint}" in line and "AWS_ENDPOINT_URL" in line


def test_a_misspelt_variable_is_warned_about_and_ignored(etl_env, sqs_client) -> None:
    send(sqs_client, etl_env.queue_url, [event(1)])
    done = cli(etl_env.vars(LOGIN_ETL_BATCHSIZE="10"), "run", "--drain")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "LOGIN_ETL_BATCHSIZE is not a login-etl setting and is ignored: "
        "did you mean LOGIN_ETL_BATCH_SIZE?"
    ) in done.stderr
