"""Services that accept connections and never answer: --max-retry-time still holds.

Each case ends with one `login-etl: error:` line and exit 1, close to the
retry budget, and no message is lost: whatever was not committed is still in
the queue. The budget is a deadline: each attempt's connect and read timeouts
are cut to the time left, so at start the line comes within the clients' own
rounding of the budget (libpq: whole seconds, at least 2; SQS: whole seconds,
at least 1), not after libpq's 10 s connect timeout or SQS's 5 s call timeout.
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

BUDGET = 4  # --max-retry-time for the mid-run cases
# From `python -m login_etl` to its first call to a service, on a busy machine.
STARTUP = 2.5


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


def assert_gave_up(done, started: float, what: str, budget: int = BUDGET) -> float:
    elapsed = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("login-etl: error:")]
    assert done.returncode == 1, done.stderr[-3000:]
    assert len(errors) == 1 and f"gave up after {budget}s" in errors[0], done.stderr[-3000:]
    assert what in errors[0], errors[0]
    assert "Traceback" not in done.stderr
    return elapsed


def hung_at_start(env: dict[str, str], budget: int) -> tuple[subprocess.CompletedProcess, float]:
    """A worker started against `env` (one service hung): its result, and when it started."""
    started = time.monotonic()
    return cli(env, "run", "--drain", "--max-retry-time", str(budget), timeout=90), started


# A budget below SQS's 5 s call timeout: before each attempt was cut to the time left,
# the line came after that timeout, ~6 s from the start here.
SQS_START_BUDGET = 2


@pytest.mark.timeout(120)
def test_hung_sqs_at_start(etl_env) -> None:
    relay = Relay(None, frozen=True)
    try:
        env = etl_env.vars(AWS_ENDPOINT_URL=f"http://127.0.0.1:{relay.port}")
        done, started = hung_at_start(env, SQS_START_BUDGET)
    finally:
        relay.close()
    elapsed = assert_gave_up(done, started, "SQS", SQS_START_BUDGET)
    # Within the budget, SQS's rounding to whole seconds (under 1 s) and the start-up.
    assert SQS_START_BUDGET <= elapsed < SQS_START_BUDGET + 1 + STARTUP, elapsed


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
    # A long poll (1 s here) may be in flight when the outage begins; each call's
    # timeouts are cut to the time left, so the line comes near the budget (it came
    # after two tries of the poll's 11 s timeout before).
    assert BUDGET - 1 <= elapsed < BUDGET + 10, elapsed
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 30


# A budget below libpq's 10 s connect timeout: before each attempt was cut to the time
# left, the line came after that timeout (~10.8 s from the start here).
PG_START_BUDGET = 4


@pytest.mark.timeout(120)
def test_hung_postgres_at_start(etl_env) -> None:
    relay = Relay(None, frozen=True)
    try:
        env = etl_env.vars(
            LOGIN_ETL_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{relay.port}/postgres"
        )
        done, started = hung_at_start(env, PG_START_BUDGET)
    finally:
        relay.close()
    elapsed = assert_gave_up(done, started, "PostgreSQL", PG_START_BUDGET)
    # Within the budget, libpq's 2 s floor for a last attempt, and the start-up.
    assert PG_START_BUDGET <= elapsed < PG_START_BUDGET + 2 + STARTUP, elapsed


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
    assert elapsed < BUDGET + 10, elapsed
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 20
    # The 5 that never committed are still in the queue, not lost.
    attrs = sqs_client.get_queue_attributes(QueueUrl=etl_env.queue_url, AttributeNames=["All"])
    a = attrs["Attributes"]
    assert (
        int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"]) == 5
    )
