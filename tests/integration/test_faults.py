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

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql

from login_etl.dev.local import LocalPostgres, LocalSqs, local_aws_env
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.transform import open_body

from .conftest import Env
from .helpers import USER_LOGINS_DDL, assert_queue_empties, cli, query, scalar

# -- test data ----------------------------------------------------------------


@dataclass
class Batch:
    """Bodies to send: which user ids must load, and which bodies must be rejected."""

    bodies: list[str]
    good: set[str]
    bad: list[str]

    def __add__(self, other: Batch) -> Batch:
        return Batch(self.bodies + other.bodies, self.good | other.good, self.bad + other.bad)


def make_batch(n: int, *, seed: int, bad_rate: float = 0.0, tag: str = "u") -> Batch:
    """`n` messages, each with a unique user id; about `bad_rate` of them malformed."""
    rng = random.Random(seed)
    bodies: list[str] = []
    good: set[str] = set()
    bad: list[str] = []
    for i in range(n):
        user_id = f"{tag}-{i}"
        record = {
            "user_id": user_id,
            "app_version": rng.choice(["2.3.0", "0.96", "7.31"]),
            "device_type": rng.choice(["android", "ios"]),
            "ip": f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            "locale": rng.choice(["RU", "PH", None]),
            "device_id": f"{rng.randrange(100, 1000)}-{rng.randrange(10, 100)}-{i % 10000:04d}",
        }
        if rng.random() < bad_rate:
            kind = rng.randrange(3)
            if kind == 0:
                body = "{not json"
            elif kind == 1:
                body = json.dumps({"foo": "oops_wrong_msg_type", "bar": str(i)})
            else:  # well-formed JSON carrying a user id, but not loadable
                body = json.dumps(record | {"user_id": f"bad-{i}", "app_version": "x.y"})
            bad.append(body)
        else:
            body = json.dumps(record)
            good.add(user_id)
        bodies.append(body)
    return Batch(bodies, good, bad)


# -- queue and database helpers --------------------------------------------------


def send(client: Any, queue_url: str, bodies: list[str]) -> None:
    for i in range(0, len(bodies), 10):
        entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
        assert not client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")


def depth(client: Any, queue_url: str) -> tuple[int, int]:
    """(visible, not visible) messages in the queue."""
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def counts(url: str) -> tuple[int, int, int]:
    """(rows, rejections, ledger entries)."""
    return (
        scalar(url, "SELECT count(*) FROM user_logins"),
        scalar(url, "SELECT count(*) FROM user_logins_rejected"),
        scalar(url, "SELECT count(*) FROM login_etl_ledger"),
    )


def done_count(url: str) -> int:
    """Rows plus rejections; 0 before the worker created its tables."""
    try:
        rows, rejected, _ = counts(url)
    except psycopg.errors.UndefinedTable:
        return 0
    return rows + rejected


def assert_exactly_once(env: Env, batch: Batch) -> None:
    """Every message is one row or one rejection: none twice, none lost, none both."""
    url = env.database_url
    duplicated = query(
        url, "SELECT user_id, count(*) FROM user_logins GROUP BY user_id HAVING count(*) > 1"
    )
    assert duplicated == []
    loaded = {r[0] for r in query(url, "SELECT user_id FROM user_logins")}
    assert loaded == batch.good  # nothing lost, nothing rejected that should load
    masker = Masker(decode_key(env.key))
    rejected = [
        open_body(masker, r[0], r[1])
        for r in query(url, "SELECT sealed_body, message_id FROM user_logins_rejected")
    ]
    assert sorted(rejected) == sorted(batch.bad)  # exactly the malformed ones, each once
    rows, rejections, ledger = counts(url)
    assert (rows, rejections) == (len(batch.good), len(batch.bad))
    assert rows + rejections == ledger == len(batch.bodies)
    outcomes = dict(query(url, "SELECT outcome, count(*) FROM login_etl_ledger GROUP BY 1"))
    expected = {"loaded": len(batch.good), "rejected": len(batch.bad)}
    assert outcomes == {k: v for k, v in expected.items() if v}


def stats_line(log: str) -> dict[str, int]:
    """The counters of the final `worker stopped` line."""
    lines = [line for line in log.splitlines() if "worker stopped" in line]
    assert len(lines) == 1, log[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b(?!\.)", lines[0])}


# -- workers ------------------------------------------------------------------------


@dataclass
class Worker:
    """A `login-etl` subprocess whose stderr goes to a file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker still running after {timeout:g}s:\n{self.log[-3000:]}")


@dataclass
class Workers:
    """Starts workers and makes sure none outlives its test."""

    tmp: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, env: dict[str, str], *args: str) -> Worker:
        log_path = self.tmp / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "login_etl", *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        worker = Worker(proc, log_path)
        self.started.append(worker)
        return worker

    def kill_all(self) -> None:
        for w in self.started:
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()


def drain(env: dict[str, str], *extra: str, timeout: float = 120) -> str:
    """Run `login-etl run --drain` to completion; return its log."""
    done = cli(env, "run", "--drain", *extra, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


# -- dedicated servers (ones a test may stop) ---------------------------------------


@pytest.fixture
def own_pg() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, free to stop and restart."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def own_pg_env(own_pg: LocalPostgres, queue_url: str, aws_env: dict[str, str]) -> Env:
    """A fresh queue on the session SQS, and a database on `own_pg`."""
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        # The server's default is synchronous_commit=off: the sink must still make
        # each batch durable before deleting its messages (a crash test below).
        conn.execute("CREATE DATABASE etl")
    return Env(queue_url, own_pg.url_for("etl"), generate_key(), aws_env)


@pytest.fixture
def own_sqs() -> Iterator[LocalSqs]:
    """A moto SQS server of this test's own, free to stop and restart (in this process)."""
    with LocalSqs() as server:
        yield server


@pytest.fixture
def own_sqs_env(own_sqs: LocalSqs, database_url: str) -> tuple[Env, Any]:
    """A queue on `own_sqs` and a fresh database; plus a client for that endpoint."""
    aws = local_aws_env(own_sqs.endpoint)
    client = boto3.client(
        "sqs",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    url = client.create_queue(QueueName="login-queue", Attributes={"VisibilityTimeout": "10"})[
        "QueueUrl"
    ]
    return Env(url, database_url, generate_key(), aws), client


# -- 1. kill -9 -----------------------------------------------------------------------


class Producer(threading.Thread):
    """Sends bodies in chunks, keeping the queue shallow (moto is O(depth) per call)."""

    def __init__(self, client: Any, queue_url: str, bodies: list[str], max_depth: int) -> None:
        super().__init__(name="producer", daemon=True)
        self.client, self.queue_url, self.bodies = client, queue_url, bodies
        self.max_depth = max_depth
        self.sent = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while self.sent < len(self.bodies) and not self.halt.is_set():
                if sum(depth(self.client, self.queue_url)) > self.max_depth - 100:
                    self.halt.wait(0.2)
                    continue
                chunk = self.bodies[self.sent : self.sent + 100]
                send(self.client, self.queue_url, chunk)
                self.sent += len(chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc


@pytest.mark.timeout(400)
def test_kill_9_cycles_lose_and_duplicate_nothing(etl_env, sqs_client, workers) -> None:
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    batch = make_batch(2000, seed=7, bad_rate=0.015)
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
    wait_for(lambda: depth(sqs_client, etl_env.queue_url)[1] == 0, 30, "in-flight messages")
    loaded_by_killed = done_count(etl_env.database_url)
    log = drain(env, "--batch-size", "50")
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, env)
    stats = stats_line(log)
    assert stats["loaded"] + stats["rejected"] == len(batch.bodies) - loaded_by_killed
    print(
        f"kill -9: {cycles} cycles, {mid_batch_kills} after a commit, "
        f"{committed_before_kill} batches before kills, {loaded_by_killed} done by killed "
        f"workers, drain stats {stats}, {time.monotonic() - started:.1f}s"
    )


# -- 2. and 3. PostgreSQL outages --------------------------------------------------


def error_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("login-etl: error:")]


@pytest.mark.timeout(240)
def test_postgres_restart_mid_run_loses_nothing(own_pg, own_pg_env, sqs_client, workers) -> None:
    env, url = own_pg_env, own_pg_env.database_url
    before = make_batch(300, seed=21, bad_rate=0.02, tag="before")
    during = make_batch(100, seed=22, bad_rate=0.02, tag="during")
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
    drain(env.vars())  # nothing is left for a second worker
    assert_exactly_once(env, before + during)
    assert_queue_empties(sqs_client, env.queue_url, env.vars())


@pytest.mark.timeout(240)
def test_outage_longer_than_max_retry_time_exits_with_one_line(
    own_pg, own_pg_env, sqs_client, workers
) -> None:
    env, url = own_pg_env, own_pg_env.database_url
    sqs_client.set_queue_attributes(QueueUrl=env.queue_url, Attributes={"VisibilityTimeout": "4"})
    before = make_batch(200, seed=31, bad_rate=0.02, tag="before")
    during = make_batch(50, seed=32, tag="during")
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
    left = sum(depth(sqs_client, env.queue_url))
    assert left >= total - committed, log[-3000:]
    # ... and visible again once the failed batch's visibility lapses.
    wait_for(lambda: depth(sqs_client, env.queue_url) == (left, 0), 20, "visibility")
    drain(env.vars())
    assert_exactly_once(env, before + during)
    assert_queue_empties(sqs_client, env.queue_url, env.vars())


@pytest.mark.timeout(120)
def test_database_unreachable_at_start_exits_with_one_line(etl_env, sqs_client) -> None:
    batch = make_batch(20, seed=41)
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
    assert depth(sqs_client, etl_env.queue_url) == (20, 0)  # untouched


# -- 4. SQS outages -----------------------------------------------------------------


@pytest.mark.timeout(240)
def test_sqs_unreachable_at_start_then_back(own_sqs, own_sqs_env, workers) -> None:
    env, client = own_sqs_env
    batch = make_batch(200, seed=51, bad_rate=0.02)
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
    batch = make_batch(300, seed=61, bad_rate=0.02)
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
    wait_for(lambda: depth(client, env.queue_url)[1] == 0, 30, "in-flight messages")
    drain(env.vars())
    assert_exactly_once(env, batch)
    assert_queue_empties(client, env.queue_url, env.vars())


# -- 5. graceful shutdown -----------------------------------------------------------


def slow_inserts(url: str, seconds_per_row: float) -> None:
    """Make every insert into user_logins sleep (a slow or overloaded database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(USER_LOGINS_DDL)
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN PERFORM pg_sleep({}); RETURN NEW; END $$"
            ).format(sql.Literal(seconds_per_row))
        )
        conn.execute(
            "CREATE TRIGGER slow_insert BEFORE INSERT ON user_logins"
            " FOR EACH ROW EXECUTE FUNCTION slow_insert()"
        )


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_hands_back_held_messages(etl_env, sqs_client, workers, signum) -> None:
    url = etl_env.database_url
    # A long visibility timeout: only an explicit release makes a message visible soon.
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "120"}
    )
    slow_inserts(url, 0.05)  # a batch of 50 takes 2.5 s; receivers run ahead of it
    batch = make_batch(300, seed=71, bad_rate=0.02)
    send(sqs_client, etl_env.queue_url, batch.bodies)
    worker = workers.start(etl_env.vars(), "run", "--batch-size", "50", "--shutdown-timeout", "10")
    # The worker holds far more than the batch it is writing.
    wait_for(lambda: depth(sqs_client, etl_env.queue_url)[1] >= 120, 60, "messages in hand")
    worker.proc.send_signal(signum)
    signalled = time.monotonic()
    assert worker.wait(30) == 0, worker.log[-3000:]
    assert time.monotonic() - signalled < 10
    log = worker.log
    assert "signal received" in log and "Traceback" not in log
    stats = stats_line(log)
    assert stats["released"] > 0
    # Nothing is stuck invisible: what was not committed is back in the queue now.
    visible, in_flight = depth(sqs_client, etl_env.queue_url)
    assert in_flight == 0
    assert visible + done_count(url) == len(batch.bodies)
    assert visible > 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER slow_insert ON user_logins")
    rest = stats_line(drain(etl_env.vars()))
    assert rest["loaded"] + rest["rejected"] == visible
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())


# -- 6. visibility heartbeat ------------------------------------------------------


@pytest.mark.timeout(180)
def test_heartbeat_keeps_a_slow_batch_invisible(etl_env, sqs_client) -> None:
    url = etl_env.database_url
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    slow_inserts(url, 0.05)  # a batch of 100 takes about 5 s: 2.5 visibility timeouts
    batch = make_batch(200, seed=81, bad_rate=0.02)
    send(sqs_client, etl_env.queue_url, batch.bodies)
    # One receiver: moto may hand one message to two concurrent receive calls.
    log = drain(
        etl_env.vars(), "--batch-size", "100", "--batch-wait-seconds", "1", "--concurrency", "1"
    )
    slowest = max(float(ms) for ms in re.findall(r"batch committed .* ms=([\d.]+)", log))
    assert slowest > 4000  # the premise: batches outlived the visibility timeout twice
    stats = stats_line(log)
    assert stats["duplicates"] == 0 and stats["received"] == len(batch.bodies), stats
    assert_exactly_once(etl_env, batch)
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())
