"""`make bench`: login-etl's throughput against the limits measured in the same run.

Each line compares one stage with the fastest the same machine does the
underlying work without login-etl in the way, measured seconds apart:

* transform   — our validate+mask per event vs bare ``json.loads`` + two AES-SIV calls;
* pipeline    — the threaded loop over in-memory source/sink vs the bare transform;
* postgres    — `PostgresSink.write` (staging COPY + ledger + insert) vs a bare binary COPY;
* sqs         — a full drain (receive → load → delete) vs bare boto3 receive+delete
                of the same number of messages at the same queue depth;
* drain_lake  — a drain from memory into PostgreSQL with the lake on (outbox, the
                writer thread, its last flush to Iceberg in a local directory) vs
                the same drain with the lake off;
* backfill    — `login-etl backfill` of every row from that lake vs the postgres
                stage's figure above (the target is a ratio of at least 0.7).

These in-process ratios are information. The targets are what a user pays,
measured by `login_etl.dev.cost` in the same run: CPU per message of a whole
``run --drain`` process against a bare boto3 loop (``e2e_cpu_per_msg``),
start-up CPU (``startup_cpu_s``, beside the floor of importing boto3 and
psycopg, one client, one receive and one connection), and the sink against our own SQL from a bare
psycopg loop (``sink_vs_own_sql``) and against the exactly-once floor
(``sink_vs_floor``).

``--sqs-endpoint URL`` drains through another endpoint (LocalStack) instead of
the embedded moto server, whose cost grows with queue depth. Ratios near 1.0
mean login-etl adds little over the limit. Numbers are noisy
on a shared 2-core machine; run it twice before believing a change.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from login_etl.config import Settings
from login_etl.dev.local import LocalServices, local_services
from login_etl.dev.seed import synthetic
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.service import build_pipeline
from login_etl.sink import Batch, MemorySink
from login_etl.source import MemorySource, Message
from login_etl.transform import Row, reject, transform

SENT = datetime(2026, 1, 1, tzinfo=UTC)


def _rate(n: int, fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return n / (time.perf_counter() - started)


def bench_transform(bodies: list[str], masker: Masker) -> tuple[float, float]:
    """(ours, limit) in events per second."""
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    siv = AESSIV(os.urandom(64))
    messages = [Message(f"m{i}", "r", b, SENT) for i, b in enumerate(bodies)]

    def limit() -> None:
        for b in bodies:
            try:
                doc = json.loads(b)
            except ValueError:
                continue
            if isinstance(doc, dict) and "ip" in doc and "device_id" in doc:
                siv.encrypt(str(doc["ip"]).encode(), [b"ip"])
                siv.encrypt(str(doc["device_id"]).encode(), [b"device_id"])

    def ours() -> None:
        for m in messages:
            transform(m, masker)

    return _rate(len(bodies), ours), _rate(len(bodies), limit)


def bench_pipeline(bodies: list[str], masker: Masker) -> float:
    """Events per second through the threaded loop with in-memory seams."""
    settings = Settings(concurrency=2, batch_size=500, batch_wait_seconds=0.05, wait_time=0)
    source = MemorySource(bodies, sent_at=SENT)
    pipeline = build_pipeline(
        settings, source, MemorySink(), masker, drain=True, visibility_timeout=300
    )
    return _rate(len(bodies), pipeline.run)


def bench_postgres(
    bodies: list[str], masker: Masker, services: LocalServices
) -> tuple[float, float]:
    """(ours, limit) in rows per second against a throwaway local server."""
    import psycopg

    from login_etl import record
    from login_etl.pgsink import PostgresSink

    # Fresh SQS-shaped ids on every call, so a second run loads rather than skips.
    messages = [Message(str(uuid.uuid4()), "r", b, SENT) for b in bodies]
    rows = [r for r in (transform(m, masker) for m in messages) if isinstance(r, Row)]
    by_id = {m.message_id: m for m in messages}
    with psycopg.connect(services.pg.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.execute("CREATE TABLE bench_copy (LIKE user_logins)")

        def limit() -> None:
            with (
                conn.cursor() as cur,
                cur.copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as copy,
            ):
                table = record.user_logins()
                copy.set_types([c.copy_type for c in table])
                values = record.values_of(table)
                for r in rows:
                    copy.write_row(values(r))

        raw = _rate(len(rows), limit)
    batch_size = services.settings().batch_size
    with closing(PostgresSink(services.pg.url)) as sink:

        def ours() -> None:
            for i in range(0, len(rows), batch_size):
                chunk = rows[i : i + batch_size]
                sink.write(Batch(chunk, [], lambda mid, why: reject(by_id[mid], why, masker)))

        mine = _rate(len(rows), ours)
    return mine, raw


def bench_sqs(
    count: int, masker: Masker, services: LocalServices, *, concurrency: int = 4
) -> tuple[float, float]:
    """(ours, limit) in messages per second over SQS's HTTP API.

    The limit is `concurrency` bare receive+delete loops sharing the same
    queue depth; ours is a full drain into PostgreSQL with as many receivers,
    built exactly as `login-etl run --drain` builds it. On the embedded moto
    server, whose cost grows with queue depth, keep `count` small; give
    LocalStack's URL for more.
    """
    from login_etl.dev.cost import bare_drain
    from login_etl.pgsink import PostgresSink
    from login_etl.sqs import SqsSource

    client = services.sqs_client(pool_size=concurrency * 2 + 4)
    bodies = synthetic(count, 1)
    run_id = f"{os.getpid()}-{int(time.time())}"

    def fill(name: str) -> str:
        url: str = client.create_queue(QueueName=f"{name}-{run_id}")["QueueUrl"]
        SqsSource(url, client=client).send_bodies(bodies)
        return url

    bare_url = fill("bench-bare")

    def limit() -> None:
        bare_drain(bare_url, count, concurrency, client=client)

    raw = _rate(count, limit)
    url = fill("bench-ours")
    settings = services.settings(queue_url=url, concurrency=concurrency, wait_time=1)
    with closing(PostgresSink(settings.database_url)) as sink:
        source = SqsSource(url, client=client)
        pipeline = build_pipeline(settings, source, sink, masker, drain=True)
        mine = _rate(count, pipeline.run)
    return mine, raw


def bench_lake(
    bodies: list[str], masker: Masker, services: LocalServices
) -> tuple[float, float, float]:
    """(drain with the lake on, drain with it off, backfill) in rows per second."""
    import tempfile

    import psycopg

    from login_etl.lake.backfill import backfill
    from login_etl.pgsink import PostgresSink
    from login_etl.service import init_db, lake_writer

    run_id = f"{os.getpid()}_{int(time.time())}"

    def drain(name: str, warehouse: str | None) -> tuple[float, Settings]:
        with psycopg.connect(services.pg.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        settings = Settings(
            database_url=services.pg.url_for(name),
            lake_warehouse=warehouse,
            concurrency=2,
            batch_size=500,
            batch_wait_seconds=0.05,
            wait_time=0,
        )
        init_db(settings)
        source = MemorySource(bodies, sent_at=SENT)
        started = time.perf_counter()
        writer = lake_writer(settings)
        with closing(PostgresSink(settings.database_url, lake=writer is not None)) as sink:
            pipeline = build_pipeline(
                settings, source, sink, masker, drain=True, visibility_timeout=300
            )
            pipeline.run()
        if writer is not None:
            writer.close()  # the last flush: the lake holds every row when the drain ends
        return len(bodies) / (time.perf_counter() - started), settings

    with tempfile.TemporaryDirectory(prefix="login-etl-lake-") as tmp:
        off, _ = drain(f"bench_lake_off_{run_id}", None)
        on, settings = drain(f"bench_lake_on_{run_id}", f"file://{tmp}")
        done = backfill(settings)
    return on, off, done.inserted / done.seconds


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark and print one line each (or JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m login_etl.dev.bench", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000, help="events for in-process stages")
    parser.add_argument("--sqs-messages", type=int, default=300, help="messages for the SQS stage")
    parser.add_argument(
        "--sqs-endpoint", help="an SQS endpoint such as LocalStack's (default: embedded moto)"
    )
    parser.add_argument(
        "--cost-messages",
        type=int,
        default=1_200,
        help="messages of the longer drain for CPU per message (the shorter has a quarter)",
    )
    parser.add_argument(
        "--sink-events", type=int, default=20_000, help="events for the sink's cost figures"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    # The child processes timed below import the package: compile it first, so
    # that the first child (or every one, under PYTHONDONTWRITEBYTECODE) does
    # not pay for compiling it.
    compileall.compile_dir(os.path.dirname(os.path.dirname(__file__)), quiet=1)

    key = generate_key()
    masker = Masker(decode_key(key))
    bodies = synthetic(args.events, 42)
    results: dict[str, dict[str, float]] = {}
    ours, limit = bench_transform(bodies, masker)
    results["transform"] = {"ours": ours, "limit": limit}
    results["pipeline"] = {"ours": bench_pipeline(bodies, masker), "limit": ours}
    with local_services(sqs_endpoint=args.sqs_endpoint) as services:
        ours, limit = bench_postgres(bodies, masker, services)
        results["postgres"] = {"ours": ours, "limit": limit}
        ours, limit = bench_sqs(args.sqs_messages, masker, services)
        results["sqs"] = {"ours": ours, "limit": limit}
        on, off, backfilled = bench_lake(bodies, masker, services)
        results["drain_lake"] = {"ours": on, "limit": off}
        results["backfill"] = {"ours": backfilled, "limit": results["postgres"]["ours"]}
        for r in results.values():
            r["ratio"] = r["ours"] / r["limit"]
        paid = _what_users_pay(
            bodies[: args.sink_events], args.cost_messages, key, masker, services
        )
    results.update(paid)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'stage':<11} {'login-etl/s':>12} {'limit/s':>12} {'ratio':>6}")
    for name, r in results.items():
        if name not in paid:
            print(f"{name:<11} {r['ours']:>12,.0f} {r['limit']:>12,.0f} {r['ratio']:>6.2f}")
    cpu, start = paid["e2e_cpu_per_msg"], paid["startup_cpu_s"]
    own, floor = paid["sink_vs_own_sql"], paid["sink_vs_floor"]
    print("\nWhat a user pays (targets in brackets):")
    print(
        f"  CPU per message, steady state  {cpu['ours'] * 1e6:7.0f} µs"
        f"  vs bare boto3 loop {cpu['limit'] * 1e6:5.0f} µs  ratio {cpu['ratio']:.2f} [≤ 1.15]"
    )
    print(
        f"  start-up CPU  --help {start['help']:.2f} s   run --drain {start['run']:.2f} s  [≤ 0.2]"
        f"   floor (boto3 + psycopg, one receive, one connect) {start['floor']:.2f} s"
    )
    print(
        f"  sink {own['ours']:,.0f} rows/s  vs own SQL {own['limit']:,.0f}"
        f"  ratio {own['ratio']:.2f} [≥ 0.95]   vs exactly-once floor {floor['limit']:,.0f}"
        f"  ratio {floor['ratio']:.2f}"
    )


def _what_users_pay(
    bodies: list[str], messages: int, key: str, masker: Masker, services: LocalServices
) -> dict[str, dict[str, float]]:
    """The targets: CPU per message, start-up CPU, the sink against own SQL and the floor."""
    import psycopg

    from login_etl.dev.cost import e2e_cpu, sink_costs
    from login_etl.service import init_db

    made = iter(range(1_000))
    run_id = f"{os.getpid()}_{int(time.time())}"

    def new_database() -> str:
        name = f"bench_cost_{run_id}_{next(made)}"
        with psycopg.connect(services.pg.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        url = services.pg.url_for(name)
        init_db(Settings(database_url=url))
        return url

    cpu = e2e_cpu(services, key, new_database(), messages)
    sink = sink_costs(bodies, masker, services, new_database)
    return {
        "e2e_cpu_per_msg": {k: cpu[k] for k in ("ours", "limit", "ratio")},
        "startup_cpu_s": {
            "help": cpu["help_cpu_s"],
            "run": cpu["run_startup_cpu_s"],
            "floor": cpu["floor_startup_cpu_s"],
        },
        "sink_vs_own_sql": {
            "ours": sink["ours"],
            "limit": sink["own_sql"],
            "ratio": sink["ours"] / sink["own_sql"],
        },
        "sink_vs_floor": {
            "ours": sink["ours"],
            "limit": sink["floor"],
            "ratio": sink["ours"] / sink["floor"],
        },
    }


if __name__ == "__main__":
    main()
