"""What a user pays, measured: CPU per message, start-up CPU, and the sink against
the SQL it cannot do without.

`make bench` reports these beside its in-process ratios:

* ``e2e_cpu_per_msg`` — CPU seconds per message of a ``login-etl run --drain``
  process against a bare boto3 receive+delete loop (also its own process), on
  queues of the same content. Steady state: each side runs at two queue
  lengths and the difference is divided by the difference in messages, so
  start-up cancels out. CPU, not wall time: the endpoint's own cost (moto's
  grows with queue depth) is not ours.
* ``startup_cpu_s`` — CPU of ``login-etl --help``, and the intercept of the
  drain's line above: what a CronJob or Airflow drain pays before its first
  message; beside them the floor any such process pays (`startup_floor`):
  import boto3 and psycopg, build one SQS client, receive once, connect once.
* ``sink_vs_own_sql`` — `PostgresSink.write` against our own statements (the
  same SQL files) driven from a bare psycopg loop: what the Python around the
  SQL costs.
* ``sink_vs_floor`` — the sink against the exactly-once floor: binary COPY
  into a staging table, then ``INSERT … ON CONFLICT DO NOTHING`` into one table
  keyed by message id, one transaction per batch of the same size. What is
  left is the ledger, a second table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from login_etl.dev.local import LocalServices
from login_etl.dev.seed import synthetic
from login_etl.masking import Masker
from login_etl.sink import Batch
from login_etl.source import Message
from login_etl.transform import Rejection, Row, reject, transform

SENT = datetime(2026, 1, 1, tzinfo=UTC)


def child_cpu(argv: Sequence[str], env: dict[str, str]) -> float:
    """User + system CPU seconds of one child process run to its end."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} … exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime


def bare_drain(queue_url: str, count: int, concurrency: int = 4, *, client: Any = None) -> None:
    """`concurrency` threads receive and delete until `count` messages are gone:
    the least any SQS consumer in Python does per message."""
    if client is None:
        import boto3

        client = boto3.client("sqs")
    left = [count]
    lock = threading.Lock()

    def loop() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
            got = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            ).get("Messages", [])
            if got:
                client.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(got)
                    ],
                )
            with lock:
                left[0] -= len(got)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(loop) for _ in range(concurrency)]:
            future.result()


def startup_floor(queue_url: str, database_url: str) -> None:
    """The least a drain process does before its first message: import boto3 and
    psycopg, build one SQS client, make one receive and one database connection."""
    import boto3
    import psycopg

    boto3.client("sqs").receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    psycopg.connect(database_url).close()


def _slope(cost: Callable[[int], float], long: int) -> tuple[float, float]:
    """(CPU per message, CPU at zero messages) from runs of `long` and a quarter of it:
    two queue lengths, so start-up cancels out of the slope."""
    short = long // 4
    at_short, at_long = cost(short), cost(long)
    per_msg = (at_long - at_short) / (long - short)
    return per_msg, at_short - short * per_msg


def e2e_cpu(
    services: LocalServices, key: str, database_url: str, messages: int
) -> dict[str, float]:
    """CPU per message and start-up CPU, ours (a `run --drain` process) and the bare loop's,
    from queues of `messages` and a quarter of that."""
    from login_etl.sqs import SqsSource

    client = services.sqs_client()
    run_id = f"{os.getpid()}-{int(time.time())}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
    env.update(services.aws_env)
    exe = os.path.join(os.path.dirname(sys.executable), "login-etl")
    made = iter(range(1_000))

    def queue(count: int) -> str:
        url: str = client.create_queue(QueueName=f"bench-cost-{run_id}-{next(made)}")["QueueUrl"]
        SqsSource(url, client=client).send_bodies(synthetic(count, 7))
        return url

    def ours(count: int) -> float:
        run_env = dict(
            env,
            LOGIN_ETL_QUEUE_URL=queue(count),
            LOGIN_ETL_DATABASE_URL=database_url,
            LOGIN_ETL_MASKING_KEY=key,
            LOGIN_ETL_WAIT_TIME="1",
            LOGIN_ETL_LOG_LEVEL="warning",
        )
        return child_cpu([exe, "run", "--drain"], run_env)

    def bare(count: int) -> float:
        argv = [sys.executable, "-m", "login_etl.dev.cost", queue(count), str(count)]
        return child_cpu(argv, env)

    ours_per_msg, ours_start = _slope(ours, messages)
    bare_per_msg, _ = _slope(bare, messages)
    floor_argv = [sys.executable, "-m", "login_etl.dev.cost", "floor", queue(0), database_url]
    floors = sorted(child_cpu(floor_argv, env) for _ in range(3))
    return {
        "ours": ours_per_msg,
        "limit": bare_per_msg,
        "ratio": ours_per_msg / bare_per_msg,
        "run_startup_cpu_s": ours_start,
        "floor_startup_cpu_s": floors[1],  # the median of three
        "help_cpu_s": child_cpu([exe, "--help"], env),
    }


def sink_costs(
    bodies: list[str], masker: Masker, services: LocalServices, new_database: Callable[[], str]
) -> dict[str, float]:
    """Rows per second: the sink, our own statements from a bare loop, and the floor."""
    import psycopg

    from login_etl import record
    from login_etl.pgsink import PostgresSink, Staging
    from login_etl.sqlfiles import query

    batch_size = services.settings().batch_size

    def rows() -> list[Row]:
        # Fresh SQS-shaped ids for each measurement, so every one loads rather than skips.
        messages = [Message(str(uuid.uuid4()), "r", b, SENT) for b in bodies]
        return [r for r in (transform(m, masker) for m in messages) if isinstance(r, Row)]

    def batches(items: list[Row]) -> list[list[Row]]:
        return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]

    def rate(run: Callable[[list[list[Row]]], Any]) -> float:
        chunks = batches(rows())
        started = time.perf_counter()
        run(chunks)
        return sum(map(len, chunks)) / (time.perf_counter() - started)

    def sink(chunks: list[list[Row]]) -> None:
        def refuse(message_id: str, reason: str) -> Rejection:
            return reject(Message(message_id, "r", "{}", SENT), reason, masker)

        with closing(PostgresSink(new_database())) as s:
            for chunk in chunks:
                s.write(Batch(chunk, [], refuse))

    staging = Staging.of(lake=False)

    def own_sql(chunks: list[list[Row]]) -> None:
        with psycopg.connect(new_database()) as conn:
            for chunk in chunks:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(query("durable_commit"))
                    cur.execute(staging.create)
                    with cur.copy(staging.copy) as copy:
                        copy.set_types(staging.types)
                        for r in chunk:
                            copy.write_row(staging.values(r))
                    cur.execute(staging.load)

    # floor_logins: message_id, then the user_logins columns.
    floor_columns = (record.column("message_id"), *record.user_logins())
    floor_values = record.values_of(floor_columns)

    def floor(chunks: list[list[Row]]) -> None:
        with psycopg.connect(new_database()) as conn:
            conn.execute(
                "CREATE TABLE floor_logins (message_id text PRIMARY KEY, LIKE user_logins)"
            )
            conn.commit()
            for chunk in chunks:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS floor_staging"
                        " (LIKE floor_logins) ON COMMIT DELETE ROWS"
                    )
                    with cur.copy("COPY floor_staging FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types([c.copy_type for c in floor_columns])
                        for r in chunk:
                            copy.write_row(floor_values(r))
                    cur.execute(
                        "INSERT INTO floor_logins SELECT * FROM floor_staging"
                        " ON CONFLICT (message_id) DO NOTHING"
                    )

    mine, own, least = rate(sink), rate(own_sql), rate(floor)
    return {"ours": mine, "own_sql": own, "floor": least}


if __name__ == "__main__":  # a child process: QUEUE_URL COUNT, or floor QUEUE_URL DATABASE_URL
    if sys.argv[1] == "floor":
        startup_floor(sys.argv[2], sys.argv[3])
    else:
        bare_drain(sys.argv[1], int(sys.argv[2]))
