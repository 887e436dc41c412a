"""The lake stage on real services: PostgreSQL, and a warehouse in a local
directory or in S3 on moto's server over HTTP.

Every loaded message appears in the lake exactly once, through lost deletes,
redeliveries, a crash between the Iceberg commit and the outbox delete, and
kill -9 during a flush; `backfill` gives back the same `user_logins` rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import UTC, timedelta
from typing import Any

import boto3
import psycopg
import pytest

from login_etl import record
from login_etl.config import Settings
from login_etl.lake.table import Lake, mark_of
from login_etl.masking import Masker, decode_key, generate_key
from login_etl.pgsink import PostgresSink
from login_etl.service import build_pipeline, lake_writer
from login_etl.sink import Batch
from login_etl.source import Message
from login_etl.sqlfiles import query as named_query
from login_etl.sqlfiles import statement
from login_etl.sqs import SqsSource
from login_etl.transform import transform

from .helpers import LAKE_DAY as DAY
from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import (
    dump_text,
    lake_records,
    load_directly,
    query,
    queue_depth,
    scalar,
    wait_for,
    warehouse_bytes,
)
from .helpers import lake_event as event
from .helpers import lake_flush as flush

ROWS = "SELECT user_id, device_type, masked_ip, masked_device_id, locale, app_version, create_date"
ALL_ROWS = f"{ROWS} FROM user_logins ORDER BY 1, 2, 3, 4, 5, 6, 7"
both = pytest.mark.parametrize("warehouse", ["file", "s3"], indirect=True)


class LosesDeletes(SqsSource):
    """SQS whose first three delete answers are lost: reported done, never done."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost = 0

    def delete(self, messages: Any, *, timeout: float | None = None) -> list[str]:
        if self.lost < 3:
            self.lost += 1
            return []
        return super().delete(messages, timeout=timeout)


def drain_with_lake(env, source: SqsSource) -> None:
    """A drain wired as `login-etl run --drain` wires it with the lake on."""
    settings = Settings.load()
    writer = lake_writer(settings)
    sink = PostgresSink(env.database_url, lake=True)
    try:
        build_pipeline(settings, source, sink, settings.masker(), drain=True).run()
    finally:
        sink.close()
        assert writer is not None
        writer.close()


@both
def test_drain_with_lost_deletes_leaves_one_lake_record_per_message(
    lake_env, sqs_client, warehouse, monkeypatch
) -> None:
    monkeypatch.setenv("LOGIN_ETL_LAKE_EXTRA_FIELDS", "campaign,session_length")
    sqs_client.set_queue_attributes(
        QueueUrl=lake_env.queue_url, Attributes={"VisibilityTimeout": "2"}
    )
    events = [event(i) for i in range(60)]
    bodies = [json.dumps(e) for e in events] + ['{"foo": "oops_wrong_msg_type", "bar": "123"}']
    for i in range(0, len(bodies), 10):
        entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
        sqs_client.send_message_batch(QueueUrl=lake_env.queue_url, Entries=entries)
    losing = LosesDeletes(lake_env.queue_url)
    drain_with_lake(lake_env, losing)
    assert losing.lost == 3
    # The messages whose deletes were lost come back when their visibility lapses.
    wait_for(
        lambda: queue_depth(sqs_client, lake_env.queue_url)[1] == 0, 60, "the lost deletes' lapse"
    )
    assert queue_depth(sqs_client, lake_env.queue_url)[0] > 0
    drain_with_lake(lake_env, SqsSource(lake_env.queue_url))

    records = lake_records(lake_env)
    ids = Counter(r["message_id"] for r in records)
    assert len(ids) == 60 and set(ids.values()) == {1}  # the rejected one never reaches it
    assert scalar(lake_env.database_url, "SELECT count(*) FROM user_logins") == 60
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 0
    masker = Masker(decode_key(lake_env.key))
    by_user = {r["user_id"]: r for r in records}
    for e in events:
        r = by_user[e["user_id"]]
        assert r["app_version_raw"] == e["app_version"]
        assert r["app_version"] == int(e["app_version"].split(".")[0])
        assert masker.unmask("ip", r["masked_ip"]) == e["ip"]
        assert masker.unmask("device_id", r["masked_device_id"]) == e["device_id"]
        assert r["locale"] == e["locale"]
        assert json.loads(r["extra"]) == {
            "campaign": e["campaign"],
            "session_length": e["session"]["length"],
        }
        assert r["create_date"] == r["sent_at"].astimezone(UTC).date()
    # No plaintext address or device id in any lake file or table.
    text = warehouse_bytes(warehouse) + dump_text(lake_env.database_url).encode()
    for e in events:
        for value in (e["ip"], e["device_id"], e["session"]["client"]["ip"]):
            assert value.encode() not in text


@both
def test_crash_after_iceberg_commit_before_outbox_delete(lake_env, monkeypatch) -> None:
    from login_etl.lake import writer

    load_directly(lake_env, [json.dumps(event(i)) for i in range(30)])
    real = writer.forget
    crashed = []

    def crash_after_commit(conn, mark):
        if mark.id and not crashed:  # the delete that follows the append
            crashed.append(mark)
            raise KeyboardInterrupt("power cut")
        return real(conn, mark)

    monkeypatch.setattr(writer, "forget", crash_after_commit)
    settings = Settings.load()
    with pytest.raises(KeyboardInterrupt):
        writer.flush_once(settings)
    assert len(lake_records(lake_env)) == 30  # committed to Iceberg ...
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 30
    monkeypatch.setattr(writer, "forget", real)
    # ... and the next pass sees its mark: nothing appended twice.
    load_directly(lake_env, [json.dumps(event(i)) for i in range(30, 35)], start=30)
    result = writer.flush_once(settings)
    assert (result.recovered, result.appended, result.outbox) == (30, 5, 0)
    assert sorted(Counter(r["message_id"] for r in lake_records(lake_env)).values()) == [1] * 35


CHILD = textwrap.dedent(
    """
    import sys, time
    from login_etl.config import Settings
    from login_etl.lake import writer

    point = sys.argv[1]
    if point == "mid-write":
        import pyiceberg.io.pyarrow as pio
        real = pio.write_file
        def slow_write(*args, **kwargs):
            for task in real(*args, **kwargs):  # data files written, commit not yet made
                print("written", flush=True)
                time.sleep(60)
                yield task
        pio.write_file = slow_write
    else:
        real_forget = writer.forget
        def stall(conn, mark):
            if mark.id:
                print("committed", flush=True)
                time.sleep(60)
            return real_forget(conn, mark)
        writer.forget = stall
    writer.flush_once(Settings.load())
    """
)


@both
@pytest.mark.parametrize("point", ["mid-write", "after-commit"])
def test_kill_9_mid_flush_then_flush_again(lake_env, point: str) -> None:
    load_directly(lake_env, [json.dumps(event(i)) for i in range(40)])
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, point], env=env, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            line = child.stdout.readline().strip()
            assert line in ("written", "committed"), line
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    in_lake = len(lake_records(lake_env))
    assert in_lake == (40 if point == "after-commit" else 0)
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 40
    out = flush(lake_env)
    assert "0 rows left in the outbox" in out
    ids = Counter(r["message_id"] for r in lake_records(lake_env))
    assert len(ids) == 40 and set(ids.values()) == {1}


@both
def test_truncate_then_backfill_gives_identical_rows(lake_env) -> None:
    days = [DAY - timedelta(days=d) for d in range(3)]
    for n, sent in enumerate(days):
        load_directly(
            lake_env, [json.dumps(event(i)) for i in range(n * 50, n * 50 + 50)], sent, n * 50
        )
        if n < 2:
            flush(lake_env)  # the last day's rows stay in the outbox
    before = query(lake_env.database_url, ALL_ROWS)
    assert len(before) == 150
    with psycopg.connect(lake_env.database_url) as conn:
        conn.execute("TRUNCATE user_logins")
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    done = cli(env, "backfill")
    assert done.returncode == 0, done.stderr
    assert "inserted 150 (100 from the lake, 50 from the outbox)" in done.stdout
    assert query(lake_env.database_url, ALL_ROWS) == before
    again = cli(env, "backfill", "--since", days[1].date().isoformat())
    assert again.returncode == 0, again.stderr
    assert "deleted 100 rows" in again.stdout
    assert query(lake_env.database_url, ALL_ROWS) == before

    # Rows the lake never saw, on a day before its first record: refused unless --force.
    first = min(d.date() for d in days)
    with psycopg.connect(lake_env.database_url) as conn:
        conn.execute(
            "INSERT INTO user_logins VALUES ('old', 'ios', 'm', 'm', NULL, 1, %s)",
            (first - timedelta(days=1),),
        )
    early = (first - timedelta(days=1)).isoformat()
    refused = cli(env, "backfill", "--since", early)
    assert refused.returncode == 2
    assert f"the lake's first record is from {first}" in refused.stderr
    assert scalar(lake_env.database_url, "SELECT count(*) FROM user_logins") == 151
    forced = cli(env, "backfill", "--since", early, "--force")
    assert forced.returncode == 0, forced.stderr
    assert query(lake_env.database_url, ALL_ROWS) == before


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_backfill_refuses_to_lose_rows_the_lake_never_saw(lake_env) -> None:
    load_directly(lake_env, [json.dumps(event(i)) for i in range(10)], DAY, 0)
    flush(lake_env)
    # A worker without the lake setting loads two more rows on the same day.
    masker = Masker(decode_key(lake_env.key))
    messages = [Message(f"x-{i}", "r", json.dumps(event(100 + i)), DAY) for i in range(2)]
    rows = [transform(m, masker) for m in messages]
    sink = PostgresSink(lake_env.database_url)  # lake off: no outbox record
    try:
        sink.write(Batch(rows, [], lambda mid, why: pytest.fail("no refusal expected")))
    finally:
        sink.close()
    before = query(lake_env.database_url, ALL_ROWS)
    assert len(before) == 12
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    refused = cli(env, "backfill")
    assert refused.returncode == 2, refused.stderr
    assert "the lake holds 2 fewer rows than user_logins" in refused.stderr
    assert query(lake_env.database_url, ALL_ROWS) == before  # nothing changed
    forced = cli(env, "backfill", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(query(lake_env.database_url, ALL_ROWS)) == 10


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_rekey_rewrites_lake_masks_and_backfill_restores_them(lake_env, monkeypatch) -> None:
    bodies = [json.dumps(event(i)) for i in range(20)]
    load_directly(lake_env, bodies[:15])
    flush(lake_env)
    load_directly(lake_env, bodies[15:], start=15)  # waits in the outbox under the old key
    old, new = lake_env.key, generate_key()
    env = lake_env.vars(
        LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse,
        LOGIN_ETL_MASKING_KEY=new,
        LOGIN_ETL_MASKING_OLD_KEYS=old,
    )
    done = cli(env, "rekey")
    assert done.returncode == 0, done.stderr
    assert "lake: rewrote 15 records in 1 partitions and 5 outbox rows" in done.stdout
    flush(lake_env)
    masker = Masker(decode_key(new))
    records = lake_records(lake_env)
    assert len(records) == 20
    for r in records:
        assert masker.is_current(r["masked_ip"]) and masker.is_current(r["masked_device_id"])
    before = query(lake_env.database_url, ALL_ROWS)
    with psycopg.connect(lake_env.database_url) as conn:
        conn.execute("TRUNCATE user_logins")
    assert cli(env, "backfill").returncode == 0
    assert query(lake_env.database_url, ALL_ROWS) == before


@both
def test_maintain_compacts_expires_and_removes_orphans(lake_env) -> None:
    for n in range(4):  # four passes: four small files per day
        load_directly(
            lake_env, [json.dumps(event(i)) for i in range(n * 10, n * 10 + 10)], start=n * 10
        )
        flush(lake_env)
    lake = Lake(lake_env.database_url, lake_env.warehouse)
    try:
        table = lake.table()
        assert len(table.metadata.snapshots) == 4
        mark = mark_of(table)
    finally:
        lake.close()
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    done = cli(env, "lake", "maintain", "--older-than-seconds", "0", "--retain-last", "1")
    assert done.returncode == 0, done.stderr
    # 4 appends, then the compaction's one snapshot: all but the newest expire.
    assert "compacted 1 partitions (4 files into 1), expired 4 snapshots" in done.stdout
    assert "; 1 data files" in done.stdout
    files = _listing(lake_env.warehouse)
    assert sum(1 for f in files if f.endswith(".parquet")) == 1
    records = lake_records(lake_env)
    assert sorted(r["message_id"] for r in records) == sorted(f"m-{i}" for i in range(40))
    lake = Lake(lake_env.database_url, lake_env.warehouse)
    try:
        assert mark_of(lake.table()) == mark  # the mark survives compaction and expiry
    finally:
        lake.close()


def _listing(warehouse: str) -> list[str]:
    if warehouse.startswith("file://"):
        root = warehouse.removeprefix("file://")
        return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    bucket = warehouse.removeprefix("s3://").split("/")[0]
    found = boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in found]


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_lake_unreachable_loading_goes_on_and_outbox_grows(lake_env, tmp_path) -> None:
    load_directly(lake_env, [json.dumps(event(i)) for i in range(10)])
    flush(lake_env)
    # The warehouse directory turns unwritable: the next flush fails and keeps the rows.
    root = lake_env.warehouse.removeprefix("file://")
    os.rename(root, root + ".away")
    with open(root, "w") as fh:
        fh.write("not a directory")
    load_directly(lake_env, [json.dumps(event(i)) for i in range(10, 25)], start=10)
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse, LOGIN_ETL_MAX_RETRY_TIME="1")
    failed = cli(env, "lake", "flush")
    assert failed.returncode == 1, failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert "lake failed, retrying" in lines[0]  # retried under --max-retry-time, stage "lake"
    assert lines[-1].startswith("login-etl: error: lake: gave up after 1s"), lines[-1]
    assert scalar(lake_env.database_url, "SELECT count(*) FROM user_logins") == 25
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 15
    os.remove(root)
    os.rename(root + ".away", root)
    flush(lake_env)
    assert len(lake_records(lake_env)) == 25


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_refused_rows_stay_out_and_a_replay_brings_them_in_once(lake_env) -> None:
    with psycopg.connect(lake_env.database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.user_id LIKE 'poison%' THEN RAISE EXCEPTION 'refused'; END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER refuse_poison BEFORE INSERT ON user_logins"
            " FOR EACH ROW EXECUTE FUNCTION refuse_poison();"
        )
    bodies = [json.dumps(event(i)) for i in range(10)]
    bodies += [json.dumps(event(100 + i, user_id=f"poison-{i}")) for i in range(3)]
    load_directly(lake_env, bodies)  # the refused rows are isolated into rejections
    assert scalar(lake_env.database_url, "SELECT count(*) FROM login_etl_lake_outbox") == 10
    flush(lake_env)
    assert len(lake_records(lake_env)) == 10
    with psycopg.connect(lake_env.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_poison ON user_logins")
    env = lake_env.vars(LOGIN_ETL_LAKE_WAREHOUSE=lake_env.warehouse)
    for _ in range(2):  # a second replay finds nothing left to move
        done = cli(env, "rejects", "replay")
        assert done.returncode == 0, done.stderr
    flush(lake_env)
    ids = Counter(r["message_id"] for r in lake_records(lake_env))
    assert len(ids) == 13 and set(ids.values()) == {1}


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_a_transaction_open_across_a_flush_reaches_the_lake_once(lake_env) -> None:
    # A writer's transaction takes its xid, then others commit after it. A flush
    # meanwhile may not move the mark past the open transaction: its rows, committed
    # later below the mark, would count as in the lake and be deleted unseen.
    from login_etl.lake import writer

    settings = Settings.load()
    masker = Masker(decode_key(lake_env.key))
    load_directly(lake_env, [json.dumps(event(i)) for i in range(5)])
    with psycopg.connect(lake_env.database_url) as open_tx:
        open_tx.execute("SELECT pg_current_xact_id()")  # older than the loads below
        load_directly(lake_env, [json.dumps(event(i)) for i in range(5, 10)], start=5)
        for i in range(10, 13):
            row = transform(Message(f"m-{i}", "r", json.dumps(event(i)), DAY), masker, lake=True)
            outbox = record.lake()
            open_tx.execute(
                statement("lake_outbox_insert", lake=outbox), record.params_of(row, outbox)
            )
        first = writer.flush_once(settings)
        open_tx.commit()
    second = writer.flush_once(settings)
    ids = Counter(r["message_id"] for r in lake_records(lake_env))
    assert ids == Counter(f"m-{i}" for i in range(13))
    # The rows committed after the open transaction began wait for it to end.
    assert (first.appended, first.outbox) == (5, 5)
    assert (second.appended, second.outbox) == (8, 0)


def _lock_holder(url: str) -> psycopg.Connection[Any]:
    """A session holding the lake writer lock, as a running flush does."""
    holder = psycopg.connect(url, autocommit=True)
    assert holder.execute(named_query("lake_lock")).fetchone() == (True,)
    holder.execute("SELECT 'holding'")  # its last query is no longer the lock's
    return holder


def _last_lock_try(url: str) -> Any:
    """When another session last tried the writer lock, if that was its last query."""
    return scalar(
        url,
        "SELECT max(query_start) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
        " AND datname = current_database() AND query LIKE %s",
        "%pg_try_advisory_lock(hashtext('login-etl lake writer'))%",
    )


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
@pytest.mark.parametrize("command", ["backfill", "rekey"])
def test_backfill_and_rekey_wait_for_a_running_flush(lake_env, monkeypatch, command) -> None:
    from login_etl.lake import backfill, upkeep

    load_directly(lake_env, [json.dumps(event(i)) for i in range(10)])
    flush(lake_env)
    monkeypatch.setenv("LOGIN_ETL_MASKING_KEY", generate_key())
    monkeypatch.setenv("LOGIN_ETL_MASKING_OLD_KEYS", lake_env.key)
    settings = Settings.load()
    run = {
        "backfill": lambda: backfill.backfill(settings),
        "rekey": lambda: upkeep.rekey(settings, settings.masker()),
    }[command]
    outcome: list[Any] = []
    holder = _lock_holder(lake_env.database_url)
    try:
        thread = threading.Thread(target=lambda: outcome.append(run()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while thread.is_alive() and (first := _last_lock_try(lake_env.database_url)) is None:
            assert time.monotonic() < deadline, f"{command} neither ran nor tried the lock"
            time.sleep(0.02)
        # Waiting, not merely slow: it tries the lock again.
        while thread.is_alive() and _last_lock_try(lake_env.database_url) in (None, first):
            assert time.monotonic() < deadline, f"{command} went on without the lock"
            time.sleep(0.02)
        assert thread.is_alive() and not outcome, f"{command} ran while a flush held the lock"
        assert lake_records(lake_env) and len(lake_records(lake_env)) == 10
    finally:
        holder.execute(named_query("lake_unlock"))
        holder.close()
    thread.join(60)
    assert not thread.is_alive() and len(outcome) == 1
    if command == "backfill":
        assert (outcome[0].deleted, outcome[0].inserted) == (10, 10)
    else:
        assert outcome[0].rows == 10
