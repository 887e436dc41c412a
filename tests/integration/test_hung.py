"""Services that accept connections and never answer: --max-retry-time still holds.

Each case ends with one `login-etl: error:` line and exit 1, close to the
retry budget (a call in flight may finish its own timeout first), and no
message is lost: whatever was not committed is still in the queue.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from .helpers import cli, event, scalar, send
from .proxy import Relay

# Timing matters here (outages, kills, retry budgets): these run one after another
# on one pytest worker, beside the other worker's tests.
pytestmark = pytest.mark.xdist_group("faults")

BUDGET = 10  # --max-retry-time for every case


def ledgered(url: str) -> int:
    """Ledger entries so far; 0 before the worker has created its tables."""
    if not scalar(url, "SELECT to_regclass('login_etl_ledger') IS NOT NULL"):
        return 0
    return int(scalar(url, "SELECT count(*) FROM login_etl_ledger"))


def worker_after(env: dict[str, str], url: str, loaded: int) -> subprocess.Popen[str]:
    """A running worker (budget BUDGET) once it has ledgered `loaded` messages."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "login_etl", "run", "--max-retry-time", str(BUDGET)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while ledgered(url) < loaded:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"the worker did not load {loaded} messages: {stderr[-2000:]}")
        time.sleep(0.2)
    return proc


def freeze_and_wait(
    proc: subprocess.Popen[str], relay: Relay, then: Callable[[], object] | None = None
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Freeze `relay` (then run `then`), wait for the worker to end; (its result, start)."""
    try:
        relay.freeze()
        if then is not None:
            then()
        started = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
    finally:
        relay.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), started


def endpoint_port(env: dict[str, str]) -> int:
    return int(re.search(r":(\d+)$", env["AWS_ENDPOINT_URL"]).group(1))


def assert_gave_up(done, started: float, what: str) -> float:
    elapsed = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("login-etl: error:")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert len(errors) == 1 and "gave up after 10s" in errors[0], done.stderr[-3000:]
    assert what in errors[0], errors[0]
    assert "Traceback" not in done.stderr
    return elapsed


@pytest.mark.timeout(120)
def test_hung_sqs_at_start(etl_env) -> None:
    relay = Relay(None, frozen=True)
    try:
        env = etl_env.vars(AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
        started = time.monotonic()
        done = cli(env, "run", "--drain", "--max-retry-time", str(BUDGET), timeout=90)
    finally:
        relay.close()
    elapsed = assert_gave_up(done, started, "SQS")
    assert BUDGET <= elapsed < BUDGET + 10, elapsed  # not botocore's minutes


@pytest.mark.timeout(120)
def test_hung_sqs_mid_run(etl_env, sqs_client) -> None:
    relay = Relay(endpoint_port(etl_env.aws))
    env = etl_env.vars(AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(30)])
    proc = worker_after(env, etl_env.database_url, 30)
    # Whichever SQS call hangs first gives up first: a poll, or the last batch's deletes.
    done, started = freeze_and_wait(proc, relay)
    elapsed = assert_gave_up(done, started, "SQS")
    assert re.search(r"error: (receive|delete|extend): gave up", done.stderr), done.stderr
    # A long poll (1 s here) plus its slack may be in flight when the outage begins.
    assert BUDGET - 1 <= elapsed < BUDGET + 25, elapsed
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 30


@pytest.mark.timeout(120)
def test_hung_postgres_at_start(etl_env) -> None:
    relay = Relay(None, frozen=True)
    try:
        env = etl_env.vars(
            LOGIN_ETL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{relay.port}/postgres"
        )
        started = time.monotonic()
        done = cli(env, "run", "--drain", "--max-retry-time", str(BUDGET), timeout=90)
    finally:
        relay.close()
    elapsed = assert_gave_up(done, started, "PostgreSQL")
    assert BUDGET <= elapsed < BUDGET + 12, elapsed  # libpq's connect_timeout is 10 s


@pytest.mark.timeout(150)
def test_hung_postgres_mid_run(etl_env, sqs_client, pg_server) -> None:
    relay = Relay(pg_server.port)
    dbname = etl_env.database_url.rsplit("/", 1)[1]
    url = f"postgresql://postgres@127.0.0.1:{relay.port}/{dbname}"
    env = etl_env.vars(LOGIN_ETL_DATABASE_URL=url)
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(20)])
    proc = worker_after(env, etl_env.database_url, 20)

    def more_work() -> None:  # five messages that need a write through the frozen relay
        send(sqs_client, etl_env.queue_url, [event(100 + i) for i in range(5)])

    elapsed = assert_gave_up(*freeze_and_wait(proc, relay, more_work), "write")
    assert elapsed < BUDGET + 25, elapsed
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 20
    # The 5 that never committed are still in the queue, not lost.
    attrs = sqs_client.get_queue_attributes(QueueUrl=etl_env.queue_url, AttributeNames=["All"])
    a = attrs["Attributes"]
    assert (
        int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]) == 5
    )
