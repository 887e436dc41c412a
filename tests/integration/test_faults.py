"""Fault injection on real services: kill -9, database and queue outages, signals.

The promise under test: every message sent ends as exactly one row in
`user_logins` or one row in `user_logins_rejected` — never both, never twice,
never lost — whatever happens to the worker, PostgreSQL or SQS meanwhile.

Workers run as `python -m login_etl run` subprocesses, as in production;
PostgreSQL (`LocalPostgres`) and moto's SQS server (`LocalSqs`) are real
servers that the tests stop and start. moto gets slower as its queue deepens
(each call is O(depth)), so the large test feeds its queue gradually.
"""

from __future__ import annotations

import random
import re
import signal
import time

import psycopg
import pytest

from .helpers import (
    Producer,
    assert_exactly_once,
    assert_queue_empties,
    cli,
    done_count,
    drain,
    drain_until_empty,
    error_lines,
    make_messages,
    queue_depth,
    send,
    slow_inserts,
    stats_line,
    wait_for,
)

# Timing matters here (outages, kills, retry budgets): these run one after another
# on one pytest worker, beside the other worker's tests.
pytestmark = pytest.mark.xdist_group("faults")

# -- 1. kill -9 -----------------------------------------------------------------------


@pytest.mark.timeout(400)
def test_kill_9_cycles_lose_and_duplicate_nothing(etl_env, sqs_client, workers) -> None:
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    # The kills are the test: twenty of them, at least five after a commit. The message
    # count only has to keep the workers busy through them (each holds up to 200, the
    # producer keeps up to 250 in the queue). Killed workers get through ~40 messages a
    # cycle, so 1000 kept the loop going well past twenty kills (and past its 240 s
    # bound on a loaded machine, with 500-600 sent) without any further kind of kill.
    batch = make_messages(600, seed=7, bad_rate=0.015)
    assert 10 <= len(batch.bad) <= 60
    producer = Producer(sqs_client, etl_env.queue_url, batch.bodies, max_depth=250)
    producer.start()
    rng = random.Random(1234)
    env = etl_env.vars()
    args = ("run", "--batch-size", "50", "--wait-time", "1", "--max-in-flight", "200")
    cycles = 0
    started = time.monotonic()
    try:
        while cycles < 20 or producer.is_alive():
            assert time.monotonic() - started < 240, f"only {producer.sent} sent"
            worker = workers.start(env, *args)
            # Most kills land while the worker is busy; every fourth may hit its start-up.
            if cycles % 4:
                wait_for(lambda w=worker: "worker started" in w.log or not w.alive(), 30, "start")
            time.sleep(rng.uniform(0.3, 2.0))
            assert worker.alive(), worker.log[-3000:]  # it must die by our hand only
            worker.proc.kill()
            assert worker.proc.wait(10) == -signal.SIGKILL
            cycles += 1
    finally:
        producer.halt.set()
        producer.join(30)
    assert producer.error is None, producer.error
    assert producer.sent == len(batch.bodies)
    killed_logs = [w.log for w in workers.started]
    committed_before_kill = sum(log.count("batch committed") for log in killed_logs)
    mid_batch_kills = sum(1 for log in killed_logs if "batch committed" in log)
    # The kills were real faults: many happened after a worker had committed work.
    assert committed_before_kill > 0 and mid_batch_kills >= 5
    # Messages the killed workers held come back once their visibility lapses.
    wait_for(lambda: queue_depth(sqs_client, etl_env.queue_url)[1] == 0, 30, "in-flight messages")
    loaded_by_killed = done_count(etl_env.database_url)
    stats = drain_until_empty(sqs_client, etl_env.queue_url, env, "--batch-size", "50")
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, env)
    assert stats["loaded"] + stats["rejected"] == len(batch.bodies) - loaded_by_killed
    print(
        f"kill -9: {cycles} cycles, {mid_batch_kills} after a commit, "
        f"{committed_before_kill} batches before kills, {loaded_by_killed} done by killed "
        f"workers, drain stats {stats}, {time.monotonic() - started:.1f}s"
    )


# -- 2. and 3. PostgreSQL outages --------------------------------------------------


@pytest.mark.timeout(240)
def test_postgres_restart_mid_run_loses_nothing(own_pg, own_pg_env, sqs_client, workers) -> None:
    env, url = own_pg_env, own_pg_env.database_url
    before = make_messages(300, seed=21, bad_rate=0.02, tag="before")
    during = make_messages(100, seed=22, bad_rate=0.02, tag="during")
    send(sqs_client, env.queue_url, before.bodies)
    worker = workers.start(env.vars(), "run", "--batch-size", "20", "--max-retry-time", "60")
    wait_for(lambda: done_count(url) > 0, 60, "the first commit")
    own_pg.stop("fast")  # terminates the worker's session, maybe mid-transaction
    send(sqs_client, env.queue_url, during.bodies)  # work arrives during the outage
    time.sleep(4)
    assert worker.alive(), worker.log[-3000:]
    own_pg.start()
    total = len(before.bodies) + len(during.bodies)
    wait_for(lambda: done_count(url) == total, 90, "everything to load after the restart")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait(40) == 0, worker.log[-3000:]
    assert "write failed, retrying" in worker.log
    assert "Traceback" not in worker.log
    drain_until_empty(sqs_client, env.queue_url, env.vars())
    assert_exactly_once(env, before + during)
    assert_queue_empties(sqs_client, env.queue_url, env.vars())


@pytest.mark.timeout(240)
def test_outage_longer_than_max_retry_time_exits_with_one_line(
    own_pg, own_pg_env, sqs_client, workers
) -> None:
    env, url = own_pg_env, own_pg_env.database_url
    sqs_client.set_queue_attributes(QueueUrl=env.queue_url, Attributes={"VisibilityTimeout": "4"})
    before = make_messages(200, seed=31, bad_rate=0.02, tag="before")
    during = make_messages(50, seed=32, tag="during")
    send(sqs_client, env.queue_url, before.bodies)
    worker = workers.start(env.vars(), "run", "--batch-size", "20", "--max-retry-time", "3")
    wait_for(lambda: done_count(url) > 0, 60, "the first commit")
    own_pg.stop("immediate")  # a crash: no goodbye to the clients
    send(sqs_client, env.queue_url, during.bodies)
    assert worker.wait(60) == 1, worker.log[-3000:]
    log = worker.log
    assert "Traceback" not in log
    errors = error_lines(log)
    assert len(errors) == 1, log[-3000:]
    assert log.strip().splitlines()[-1] == errors[0]
    assert "gave up after 3s" in errors[0] and "PostgreSQL" in errors[0]
    # Nothing is lost: what did not commit is still in the queue (a commit whose
    # answer the crash swallowed may be there too; the ledger skips it) ...
    own_pg.start()
    total = len(before.bodies) + len(during.bodies)
    committed = done_count(url)
    assert 0 < committed < total
    left = sum(queue_depth(sqs_client, env.queue_url))
    assert left >= total - committed, log[-3000:]
    # ... and visible again once the failed batch's visibility lapses.
    wait_for(lambda: queue_depth(sqs_client, env.queue_url) == (left, 0), 20, "visibility")
    drain_until_empty(sqs_client, env.queue_url, env.vars())
    assert_exactly_once(env, before + during)
    assert_queue_empties(sqs_client, env.queue_url, env.vars())


@pytest.mark.timeout(120)
def test_database_unreachable_at_start_exits_with_one_line(etl_env, sqs_client) -> None:
    batch = make_messages(20, seed=41)
    send(sqs_client, etl_env.queue_url, batch.bodies)
    env = etl_env.vars(
        LOGIN_ETL_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
    )
    started = time.monotonic()
    done = cli(env, "run", "--max-retry-time", "3", timeout=60)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and done.stderr.strip().splitlines()[-1] == errors[0]
    assert "gave up after 3s" in errors[0] and "cannot connect to PostgreSQL" in errors[0]
    assert queue_depth(sqs_client, etl_env.queue_url) == (20, 0)  # untouched


# -- 4. SQS outages -----------------------------------------------------------------


@pytest.mark.timeout(240)
def test_sqs_unreachable_at_start_then_back(own_sqs, own_sqs_env, workers) -> None:
    env, client = own_sqs_env
    batch = make_messages(200, seed=51, bad_rate=0.02)
    send(client, env.queue_url, batch.bodies)
    own_sqs.stop()
    worker = workers.start(env.vars(), "run", "--drain", "--max-retry-time", "60")
    time.sleep(3)
    assert worker.alive(), worker.log[-3000:]
    own_sqs.start()  # same port; moto keeps its queues in this process
    assert env.queue_url in client.list_queues().get("QueueUrls", [])
    assert worker.wait(120) == 0, worker.log[-3000:]
    assert "SQS failed, retrying" in worker.log
    assert_exactly_once(env, batch)
    assert_queue_empties(client, env.queue_url, env.vars())


@pytest.mark.timeout(240)
def test_sqs_outage_mid_run_loads_everything_once(own_sqs, own_sqs_env, workers) -> None:
    env, client = own_sqs_env
    batch = make_messages(300, seed=61, bad_rate=0.02)
    send(client, env.queue_url, batch.bodies)
    worker = workers.start(
        env.vars(), "run", "--drain", "--batch-size", "20", "--max-retry-time", "60"
    )
    wait_for(lambda: done_count(env.database_url) > 0, 60, "the first commit")
    own_sqs.stop()
    time.sleep(3)
    assert worker.alive(), worker.log[-3000:]
    own_sqs.start()
    assert worker.wait(120) == 0, worker.log[-3000:]
    assert re.search(r"(receive|delete|visibility \w+) failed", worker.log), worker.log[-3000:]
    assert 0 < done_count(env.database_url)
    # Deletes lost in the outage come back after the visibility timeout; the
    # ledger turns them into skips.
    wait_for(lambda: queue_depth(client, env.queue_url)[1] == 0, 30, "in-flight messages")
    drain_until_empty(client, env.queue_url, env.vars())
    assert_exactly_once(env, batch)
    assert_queue_empties(client, env.queue_url, env.vars())


# -- 5. graceful shutdown -----------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_hands_back_held_messages(etl_env, sqs_client, workers, signum) -> None:
    url = etl_env.database_url
    # A long visibility timeout: only an explicit release makes a message visible soon.
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "120"}
    )
    slow_inserts(url, 0.05)  # a batch of 50 takes 2.5 s; receivers run ahead of it
    batch = make_messages(300, seed=71, bad_rate=0.02)
    send(sqs_client, etl_env.queue_url, batch.bodies)
    worker = workers.start(etl_env.vars(), "run", "--batch-size", "50", "--shutdown-timeout", "10")
    # The worker holds far more than the batch it is writing.
    wait_for(lambda: queue_depth(sqs_client, etl_env.queue_url)[1] >= 120, 60, "messages in hand")
    worker.proc.send_signal(signum)
    signalled = time.monotonic()
    assert worker.wait(30) == 0, worker.log[-3000:]
    assert time.monotonic() - signalled < 10
    log = worker.log
    assert "signal received" in log and "Traceback" not in log
    stats = stats_line(log)
    assert stats["released"] > 0
    # Nothing is stuck invisible: what was not committed is back in the queue now.
    visible, in_flight = queue_depth(sqs_client, etl_env.queue_url)
    assert in_flight == 0
    assert visible + done_count(url) == len(batch.bodies)
    assert visible > 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER slow_insert ON user_logins")
    rest = drain_until_empty(sqs_client, etl_env.queue_url, etl_env.vars())
    assert rest["loaded"] + rest["rejected"] == visible
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())


# -- 6. visibility heartbeat ------------------------------------------------------


@pytest.mark.timeout(180)
def test_heartbeat_keeps_a_slow_batch_invisible(etl_env, sqs_client) -> None:
    url = etl_env.database_url
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "4"}
    )
    slow_inserts(url, 0.2)  # a batch of 50 takes about 10 s: 2.5 visibility timeouts
    batch = make_messages(100, seed=81, bad_rate=0.02)
    send(sqs_client, etl_env.queue_url, batch.bodies)
    # One receiver: moto may hand one message to two concurrent receive calls.
    # Every batch is a full 50 (100 = 2 x 50, all queued before the start): the
    # writer waits for the receiver however slow a loaded machine makes it, and the
    # drain's end (receiver done) ends the wait at once. A heartbeat round over the
    # 100 held is 10 calls; a loaded machine's moto takes seconds for 20 of them,
    # longer than two thirds of a 2 s timeout, so the timeout is 4 s.
    log = drain(
        etl_env.vars(), "--batch-size", "50", "--batch-wait-seconds", "120", "--concurrency", "1"
    )
    slowest = max(float(ms) for ms in re.findall(r"batch committed .* ms=([\d.]+)", log))
    assert slowest > 8000  # the premise: batches outlived the visibility timeout twice
    stats = stats_line(log)
    assert stats["duplicates"] == 0 and stats["received"] == len(batch.bodies), stats
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())
