"""End to end on real services: moto SQS over HTTP → login-etl → PostgreSQL."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from login_etl import service
from login_etl.config import Settings
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.metrics import Stats
from login_etl.pgsink import PostgresSink
from login_etl.service import build_pipeline, init_db
from login_etl.sink import Batch
from login_etl.source import Message
from login_etl.sqs import SqsSource
from login_etl.transform import reject, transform

from .helpers import USER_LOGINS_DDL as DDL
from .helpers import (
    assert_queue_empties,
    cli,
    dump_text,
    event,
    query,
    queue_depth,
    scalar,
    send,
    stats_line,
    wait_for,
)


def run_in_process(env, source: SqsSource) -> Stats:
    """Run a drain in this process, wired as `login-etl run --drain` wires it."""
    settings = Settings.load()
    init_db(settings)
    sink = PostgresSink(env.database_url)
    try:
        return build_pipeline(settings, source, sink, settings.masker(), drain=True).run()
    finally:
        sink.close()


class DiesAfterCommit(SqsSource):
    """A worker that dies at its first delete: after the commit, before any delete."""

    def delete(self, messages: Any, *, timeout: float | None = None) -> list[str]:
        raise SystemExit("crash")

    def change_visibility(self, messages: Any, seconds: int, **_: Any) -> list[str]:
        raise SystemExit("crash")  # dead: it hands nothing back either


def drain(env, *extra: str) -> str:
    done = cli(env.vars(), "run", "--drain", *extra)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_sample_loads_99_rows_and_1_rejection(etl_env, sample_path: Path, sqs_client) -> None:
    seeded = cli(etl_env.vars(), "seed", str(sample_path))
    assert seeded.returncode == 0, seeded.stderr
    assert "sent 100 messages" in seeded.stdout
    logs = drain(etl_env)

    records = json.loads(gzip.decompress(sample_path.read_bytes()))
    good = [r for r in records if "user_id" in r]
    assert len(good) == 99
    masker = Masker(decode_key(etl_env.key))
    rows = query(
        etl_env.database_url,
        "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version,"
        " create_date FROM user_logins",
    )
    assert len(rows) == 99
    by_user = {r[0]: r for r in rows}
    today = datetime.now(UTC).date()
    for rec in good:
        user_id, device_type, m_ip, m_dev, locale, version, created = by_user[rec["user_id"]]
        assert device_type == rec["device_type"]
        assert locale == rec["locale"]
        assert version == int(rec["app_version"].split(".")[0])
        assert masker.unmask("ip", m_ip) == rec["ip"]
        assert masker.unmask("device_id", m_dev) == rec["device_id"]
        assert created == today
    assert sum(1 for r in rows if r[4] is None) == sum(1 for r in good if r["locale"] is None)
    rejected = query(etl_env.database_url, "SELECT reason FROM user_logins_rejected")
    assert rejected == [("missing_field:user_id",)]
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())

    # No plaintext PII anywhere in the database or the logs.
    everything = dump_text(etl_env.database_url)
    for rec in good:
        for field in ("ip", "device_id"):
            assert rec[field] not in everything
            assert rec[field] not in logs
    assert etl_env.key not in logs


def test_redelivered_message_never_loads_twice(etl_env, sqs_client) -> None:
    # A short visibility timeout: the dead worker's messages come back in seconds.
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "3"}
    )
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(5)])
    source = SqsSource(etl_env.queue_url)
    # First delivery: commit but never delete (a crash right after commit) ...
    with pytest.raises(SystemExit):
        run_in_process(etl_env, DiesAfterCommit(etl_env.queue_url))
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") > 0
    # ... so SQS redelivers the same message ids.
    held = source.receive(10, 1)
    while len(held) < 5:
        held += source.receive(10, 1)
    assert not source.change_visibility(held, 0)
    stats = run_in_process(etl_env, source)
    loaded_first = 5 - stats.loaded
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 5
    assert stats.duplicates == loaded_first > 0
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())


def test_crash_between_commit_and_delete_then_rerun(etl_env, sqs_client) -> None:
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(40)] + ["not json"])
    # A worker that dies after its commit and before its delete.
    with pytest.raises(SystemExit):
        run_in_process(etl_env, DiesAfterCommit(etl_env.queue_url))
    first_rows = scalar(etl_env.database_url, "SELECT count(*) FROM user_logins")
    first_rejects = scalar(etl_env.database_url, "SELECT count(*) FROM user_logins_rejected")
    assert first_rows + first_rejects > 0
    # Everything is still in the queue; once the committed batch's visibility
    # lapses, a new worker (one receiver: moto may hand one message to two
    # concurrent receives) gets all 41 and must skip exactly the committed ones.
    wait_for(lambda: queue_depth(sqs_client, etl_env.queue_url) == (41, 0), 30, "redelivery")
    stats = stats_line(drain(etl_env, "--concurrency", "1"))
    assert stats["duplicates"] == first_rows + first_rejects
    assert (stats["loaded"], stats["rejected"]) == (40 - first_rows, 1 - first_rejects)
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 40
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins_rejected") == 1
    assert scalar(etl_env.database_url, "SELECT count(*) FROM login_etl_ledger") == 41
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())


def test_poison_row_inside_large_batch_is_isolated(etl_env, sqs_client) -> None:
    # A trigger stands in for any row PostgreSQL itself refuses.
    query_ddl = (
        DDL
        + """
    CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.user_id = 'poison' THEN RAISE EXCEPTION 'refused'; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER refuse_poison BEFORE INSERT ON user_logins
        FOR EACH ROW EXECUTE FUNCTION refuse_poison();
    """
    )
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(query_ddl)
    bodies = [event(i) for i in range(300)]
    bodies[137] = event(137, user_id="poison")
    send(sqs_client, etl_env.queue_url, bodies)
    drain(etl_env, "--batch-size", "1000", "--max-in-flight", "1000", "--batch-wait-seconds", "3")
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 299
    assert query(etl_env.database_url, "SELECT reason FROM user_logins_rejected") == [
        ("db_error:P0001",)
    ]
    assert (
        scalar(etl_env.database_url, "SELECT count(*) FROM user_logins WHERE user_id = 'poison'")
        == 0
    )
    assert_queue_empties(sqs_client, etl_env.queue_url, etl_env.vars())


def test_unmask_round_trip_through_cli(etl_env, sqs_client) -> None:
    send(sqs_client, etl_env.queue_url, [event(1, ip="203.0.113.9", device_id="555-12-3456")])
    drain(etl_env)
    m_ip, m_dev = query(
        etl_env.database_url, "SELECT masked_ip, masked_device_id FROM user_logins"
    )[0]
    why = ("--purpose", "round trip check")
    ip = cli(etl_env.vars(), "unmask", "--field", "ip", *why, m_ip)
    assert (ip.returncode, ip.stdout) == (0, "203.0.113.9\n")
    dev = cli(etl_env.vars(), "unmask", "--field", "device_id", *why, m_dev)
    assert (dev.returncode, dev.stdout) == (0, "555-12-3456\n")
    wrong_field = cli(etl_env.vars(), "unmask", "--field", "device_id", *why, m_ip)
    assert wrong_field.returncode == 1
    assert wrong_field.stderr.startswith("login-etl: error:")
    other_key = cli(
        etl_env.vars(LOGIN_ETL_MASKING_KEY=generate_key()), "unmask", "--field", "ip", *why, m_ip
    )
    assert other_key.returncode == 1
    assert "not made by a known key" in other_key.stderr


def test_existing_user_logins_table_is_accepted(etl_env) -> None:
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("INSERT INTO user_logins (user_id) VALUES ('already-there')")
    before = query(
        etl_env.database_url,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_name = 'user_logins' ORDER BY ordinal_position",
    )
    for _ in range(2):  # idempotent
        done = cli(etl_env.vars(), "init-db")
        assert done.returncode == 0, done.stderr
    after = query(
        etl_env.database_url,
        "SELECT column_name, data_type, character_maximum_length FROM information_schema.columns"
        " WHERE table_name = 'user_logins' ORDER BY ordinal_position",
    )
    assert after == before
    assert [r[0] for r in after] == [
        "user_id",
        "device_type",
        "masked_ip",
        "masked_device_id",
        "locale",
        "app_version",
        "create_date",
    ]
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 1
    tables = {r[0] for r in query(etl_env.database_url, "SELECT tablename FROM pg_tables")}
    assert {"user_logins_rejected", "login_etl_ledger"} <= tables


@pytest.mark.parametrize(
    ("override", "args", "needle"),
    [
        ({"LOGIN_ETL_MASKING_KEY": "not-base64!"}, [], "LOGIN_ETL_MASKING_KEY"),
        ({"LOGIN_ETL_MASKING_KEY": ""}, [], "masking key"),
        ({"LOGIN_ETL_QUEUE_URL": ""}, [], "LOGIN_ETL_QUEUE_URL"),
        ({}, ["--batch-size", "zero"], "--batch-size"),
        ({}, ["--batch-size", "900", "--max-in-flight", "100"], "--max-in-flight"),
        ({"LOGIN_ETL_LOG_FORMAT": "xml"}, [], "--log-format"),
        ({}, ["--queue-url", "http://127.0.0.1:1/000000000000/nope"], None),
    ],
)
def test_bad_config_exits_2_with_one_line(etl_env, override, args, needle) -> None:
    env = etl_env.vars(**override)
    if "--queue-url" in args:  # a queue that does not exist on a live endpoint
        args = ["--queue-url", etl_env.queue_url + "-missing"]
        needle = "queue does not exist"
    done = cli(env, "run", "--drain", *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("login-etl: error:")
    assert needle in lines[0]
    assert "Traceback" not in done.stderr
    if etl_env.key in env.get("LOGIN_ETL_MASKING_KEY", ""):
        assert etl_env.key not in done.stderr


def test_unreachable_database_is_one_line_and_nonzero(etl_env) -> None:
    env = etl_env.vars(
        LOGIN_ETL_DATABASE_URL="postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=2"
    )
    done = cli(env, "init-db")
    assert done.returncode == 1
    assert done.stderr.startswith("login-etl: error: cannot connect to PostgreSQL")
    assert len(done.stderr.strip().splitlines()) == 1


def test_sns_envelope_and_json_logs(etl_env, sqs_client) -> None:
    inner = event(7)
    envelope = json.dumps({"Type": "Notification", "MessageId": "x", "Message": inner})
    send(sqs_client, etl_env.queue_url, [envelope])
    logs = drain(etl_env, "--log-format", "json")
    assert scalar(etl_env.database_url, "SELECT user_id FROM user_logins") == "user-7"
    lines = [json.loads(line) for line in logs.strip().splitlines()]
    batch = [line for line in lines if line["msg"] == "batch committed"]
    assert batch and batch[0]["loaded"] == 1
    assert "10.0.0.7" not in logs


def test_two_copies_of_one_message_in_a_batch_load_once(etl_env) -> None:
    settings = Settings.load()
    init_db(settings)
    masker = settings.masker()
    sent = datetime.now(UTC)
    copies = [Message("same-id", f"receipt-{i}", event(1), sent) for i in range(2)]
    bad = [Message("bad-id", f"receipt-{i}", "not json", sent) for i in range(2)]
    rows = [transform(m, masker) for m in copies]
    rejections = [transform(m, masker) for m in bad]
    sink = PostgresSink(etl_env.database_url)
    try:
        result = sink.write(Batch(rows, rejections, lambda mid, why: reject(bad[0], why, masker)))
        again = sink.write(Batch(rows, rejections, lambda mid, why: reject(bad[0], why, masker)))
    finally:
        sink.close()
    assert (result.loaded, result.rejected, result.duplicates) == (1, 1, 2)
    assert (again.loaded, again.rejected, again.duplicates) == (0, 0, 4)
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 1
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins_rejected") == 1


class PruneBroke(Exception):
    """What the broken side thread raises."""


@pytest.mark.timeout(120)
def test_a_side_thread_error_stops_the_worker_and_run_raises_it(
    etl_env, sqs_client, monkeypatch
) -> None:
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(200)])
    url = etl_env.database_url

    def prune_then_break(connect: Any, retention: float, retrier: Any, **_: Any) -> None:
        # A side thread of the worker fails once loading is under way.
        while not retrier.stop.wait(0.05):
            if scalar(url, "SELECT to_regclass('user_logins') IS NOT NULL") and scalar(
                url, "SELECT count(*) FROM user_logins"
            ):
                raise PruneBroke("the ledger prune broke")

    monkeypatch.setattr(service.ledger, "prune_periodically", prune_then_break)
    # Not a drain: only the side thread's error can end this run.
    with pytest.raises(PruneBroke):
        service.run(Settings.load({"init_db": True, "batch_size": 20, "batch_wait_seconds": 0.2}))
    visible, in_flight = queue_depth(sqs_client, etl_env.queue_url)
    assert in_flight == 0  # what the worker held was handed back before run raised
    loaded = scalar(url, "SELECT count(*) FROM user_logins")
    assert 0 < loaded and visible + loaded == 200
