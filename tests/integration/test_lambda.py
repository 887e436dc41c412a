"""The Lambda handler against real PostgreSQL, fed events of the exact shape Lambda sends,
built from real messages received from the local SQS endpoint."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from login_etl import kms
from login_etl.aws_lambda import Handler
from login_etl.errors import ConfigError, KeyServiceUnavailable
from login_etl.masking import generate_key
from login_etl.postgres import init_schema

from .conftest import unique_name
from .helpers import (
    REFUSE_POISON,
    counts,
    event,
    make_messages,
    query,
    scalar,
    send,
    slow_inserts,
    wait_for,
)


@dataclass
class Context:
    """Lambda's context object: `remaining_ms` from its making, counting down."""

    remaining_ms: int = 60_000
    aws_request_id: str = "req-1"
    function_name: str = "login-etl"
    made: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms - int((time.monotonic() - self.made) * 1000)


def receive_all(client: Any, queue_url: str, n: int) -> list[dict]:
    """`n` messages received as the mapping receives them: every attribute."""
    got: list[dict] = []
    for _ in range(50):
        answer = client.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, n - len(got)),
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        got += answer.get("Messages", [])
        if len(got) >= n:
            return got
    raise AssertionError(f"received {len(got)} of {n}")


def lambda_event(client: Any, queue_url: str, messages: list[dict]) -> dict:
    """The event Lambda hands a function for these received messages."""
    arn = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": arn.split(":")[3],
            }
            for m in messages
        ]
    }


def delivered(client: Any, queue_url: str, bodies: list[str]) -> dict:
    """Send `bodies`, receive them all, and wrap them in one Lambda event."""
    send(client, queue_url, bodies)
    return lambda_event(client, queue_url, receive_all(client, queue_url, len(bodies)))


def failures(answer: dict) -> list[str]:
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def ids(ev: dict) -> list[str]:
    return [r["messageId"] for r in ev["Records"]]


def emf_lines(out: str) -> list[dict]:
    docs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [d for d in docs if "_aws" in d]


@pytest.fixture
def make_handler(capsys) -> Iterator[Any]:
    """Handlers over a database and key; each closed at the end of the test."""
    made: list[Handler] = []

    def make(database_url: str, key: str | None = None, **env: str) -> Handler:
        h = Handler(
            {
                "LOGIN_ETL_DATABASE_URL": database_url,
                "LOGIN_ETL_MASKING_KEY": key or generate_key(),
                **env,
            }
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def db(database_url: str) -> str:
    """A fresh database with the schema, as `login-etl init-db` leaves it."""
    init_db_at(database_url)
    return database_url


def drop_connection(url: str) -> int:
    """End the handler's one connection, as a database restart or an idle cut would;
    return its backend's pid."""
    [pid] = backend_pids(url)
    assert scalar(url, "SELECT pg_terminate_backend(%s)", pid)
    wait_for(lambda: pid not in backend_pids(url), 10, "the backend to end")
    return pid


def backend_pids(url: str) -> list[int]:
    return [
        r[0]
        for r in query(
            url,
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'login-etl'"
            " AND datname = current_database()",
        )
    ]


def test_all_good_loads_once_reusing_one_connection(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    handler = make_handler(db)
    first = delivered(sqs_client, queue_url, [event(i) for i in range(12)])
    assert failures(handler(first, Context(aws_request_id="req-a"))) == []
    pid = backend_pids(db)
    second = delivered(sqs_client, queue_url, [event(i) for i in range(12, 20)])
    assert failures(handler(second, Context(aws_request_id="req-b"))) == []
    assert counts(db) == (20, 0, 20)
    assert len(pid) == 1 and backend_pids(db) == pid  # one connection, kept between calls
    out = capsys.readouterr().out
    emf = emf_lines(out)
    assert [(d["request_id"], d["loaded"], d["failed"], d["cold_start"]) for d in emf] == [
        ("req-a", 12, 0, 1),
        ("req-b", 8, 0, 0),
    ]
    assert emf[0]["lag_seconds"] > 0  # the oldest committed message's age
    started = [json.loads(line) for line in out.splitlines() if "function started" in line]
    assert len(started) == 1 and started[0]["request_id"] == "req-a"  # once per environment
    metric_names = {m["Name"] for m in emf[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"loaded", "rejected", "duplicates", "failed", "lag_seconds"} <= metric_names
    assert all(n in emf[0] for n in metric_names)  # EMF: every metric has its value


def test_lag_from_a_clock_ahead_of_ours_is_zero(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    # SQS's clock an hour ahead of the function's: every message seems sent in the future.
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    ahead = str(int(time.time() * 1000) + 3_600_000)
    for r in ev["Records"]:
        r["attributes"]["SentTimestamp"] = ahead
    assert failures(make_handler(db)(ev, Context())) == []
    [emf] = emf_lines(capsys.readouterr().out)
    assert (emf["loaded"], emf["lag_seconds"]) == (3, 0)


def test_poison_becomes_rejections_not_failures(db, sqs_client, queue_url, make_handler) -> None:
    sent = make_messages(30, seed=5, bad_rate=0.3)
    assert sent.bad
    ev = delivered(sqs_client, queue_url, sent.bodies)
    assert failures(make_handler(db)(ev, Context())) == []
    assert counts(db) == (len(sent.good), len(sent.bad), 30)
    loaded = {r[0] for r in query(db, "SELECT user_id FROM user_logins")}
    assert loaded == sent.good


def test_logs_are_json_lines_on_stdout_with_the_request_id(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    handler = make_handler(db)
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    ev["Records"][1]["attributes"]["SentTimestamp"] = "not-a-time"
    assert failures(handler(ev, Context(aws_request_id="req-log"))) == [ids(ev)[1]]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [d for d in lines if d.get("level") == "error"]
    assert len(errors) == 1 and errors[0]["request_id"] == "req-log"
    assert errors[0]["message_id"] == ids(ev)[1]


def test_postgres_down_mid_batch_fails_every_record_and_commits_nothing(
    own_pg, sqs_client, queue_url, make_handler, capsys
) -> None:
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE etl")
    url = own_pg.url_for("etl")
    init_db_at(url)
    slow_inserts(url, 0.5)  # the write is still running when the server stops
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(10)])
    handler = make_handler(url)
    answer: dict = {}
    call = threading.Thread(target=lambda: answer.update(handler(ev, Context())))
    call.start()
    wait_for(
        lambda: (
            scalar(
                url,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'login-etl'"
                " AND wait_event = 'PgSleep'",
            )
            > 0
        ),
        30,
        "the write to be inside its INSERT",
    )
    own_pg.stop("fast")
    call.join(60)
    assert not call.is_alive()
    assert failures(answer) == ids(ev)
    own_pg.start()
    assert counts(url) == (0, 0, 0)
    [emf] = emf_lines(capsys.readouterr().out)
    assert (emf["loaded"], emf["failed"]) == (0, 10)


def init_db_at(url: str) -> None:
    with psycopg.connect(url) as conn:
        init_schema(conn)


def test_partial_commit_then_redelivery_loads_each_message_once(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    handler = make_handler(db)
    bodies = [event(i) for i in range(8)]
    send(sqs_client, queue_url, bodies)
    received = receive_all(sqs_client, queue_url, 8)
    ev = lambda_event(sqs_client, queue_url, received)
    ev["Records"][3]["attributes"]["SentTimestamp"] = "garbled"  # this one cannot be read
    assert failures(handler(ev, Context())) == [received[3]["MessageId"]]
    assert counts(db) == (7, 0, 7)
    # The mapping deletes what committed, but two of its deletes are lost: those two
    # come back with the failed one.
    back = [received[0], received[1], received[3]]
    for m in received:
        if m not in back:
            sqs_client.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    for m in back:
        sqs_client.change_message_visibility(
            QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    again = receive_all(sqs_client, queue_url, 3)
    assert {m["MessageId"] for m in again} == {m["MessageId"] for m in back}
    assert all(int(m["Attributes"]["ApproximateReceiveCount"]) == 2 for m in again)
    assert failures(handler(lambda_event(sqs_client, queue_url, again), Context())) == []
    assert counts(db) == (8, 0, 8)
    assert scalar(db, "SELECT count(DISTINCT user_id) FROM user_logins") == 8
    last = emf_lines(capsys.readouterr().out)[-1]
    assert (last["loaded"], last["duplicates"]) == (1, 2)


def test_too_little_time_left_fails_every_record_and_writes_nothing(
    db, sqs_client, queue_url, make_handler
) -> None:
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(5)])
    handler = make_handler(db)
    assert failures(handler(ev, Context(remaining_ms=1_900))) == ids(ev)
    assert counts(db) == (0, 0, 0)
    # With time enough, the same records load.
    assert failures(handler(ev, Context(remaining_ms=5_000))) == []
    assert counts(db) == (5, 0, 5)


def test_fifo_a_failure_fails_its_groups_later_records_only(
    db, sqs_client, make_handler, capsys
) -> None:
    url = sqs_client.create_queue(
        QueueName=unique_name("logins") + ".fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    try:
        order = [("A", 1), ("B", 1), ("A", 2), ("B", 2), ("A", 3)]
        for group, n in order:
            sqs_client.send_message(
                QueueUrl=url, MessageBody=event(0, user_id=f"{group}{n}"), MessageGroupId=group
            )
        received = receive_all(sqs_client, url, 5)
        ev = lambda_event(sqs_client, url, received)
        users = [json.loads(r["body"])["user_id"] for r in ev["Records"]]
        by_user = dict(zip(users, ids(ev), strict=True))
        a2 = users.index("A2")
        ev["Records"][a2]["attributes"]["SentTimestamp"] = "garbled"
        a3 = ev["Records"][users.index("A3")]["attributes"]
        a3["SentTimestamp"] = str(int(a3["SentTimestamp"]) - 86_400_000)  # a day old
        assert failures(make_handler(db)(ev, Context())) == [by_user["A2"], by_user["A3"]]
        loaded = sorted(r[0] for r in query(db, "SELECT user_id FROM user_logins"))
        assert loaded == ["A1", "B1", "B2"]
        [emf] = emf_lines(capsys.readouterr().out)
        assert (emf["loaded"], emf["failed"]) == (3, 2)  # A3 counts as failed too
        assert emf["lag_seconds"] < 86_400  # the lag is the committed messages' only
    finally:
        sqs_client.delete_queue(QueueUrl=url)


def test_a_dropped_connection_is_replaced_without_failing_the_invocation(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    handler = make_handler(db)
    assert failures(handler(delivered(sqs_client, queue_url, [event(1)]), Context())) == []
    pid = drop_connection(db)
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(2, 6)])
    assert failures(handler(ev, Context())) == []
    assert counts(db) == (5, 0, 5)
    assert backend_pids(db) not in ([], [pid])
    assert "reconnecting" in capsys.readouterr().out


def test_a_kms_key_is_decrypted_once_per_environment(
    db, sqs_client, queue_url, aws_env, make_handler, monkeypatch
) -> None:
    import boto3

    kms_key = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    wrapped = kms.new_data_key(kms_key)
    calls: list[str] = []
    real = kms.decrypt_key

    def counted(text: str, **kw: Any) -> bytes:
        calls.append(kw["name"])
        return real(text, **kw)

    monkeypatch.setattr(kms, "decrypt_key", counted)
    handler = make_handler(db, key=wrapped)
    for start in (0, 3, 6):
        ev = delivered(sqs_client, queue_url, [event(i) for i in range(start, start + 3)])
        assert failures(handler(ev, Context())) == []
    assert calls == ["LOGIN_ETL_MASKING_KEY"]
    assert counts(db) == (9, 0, 9)


def test_init_db_is_not_the_handlers_job(database_url, sqs_client, queue_url, make_handler):
    """Without the tables the invocation errors (Lambda counts it), nothing is reported ok."""
    ev = delivered(sqs_client, queue_url, [event(1)])
    with pytest.raises(ConfigError, match="init-db"):
        make_handler(database_url)(ev, Context())


def test_the_scheduled_prune_forgets_only_what_no_queue_can_redeliver(db, make_handler) -> None:
    with psycopg.connect(db) as conn:
        for message_id, days in (("old", 16), ("kept", 14)):
            conn.execute(
                "INSERT INTO login_etl_ledger (message_id, outcome, sent_at, recorded_at)"
                " VALUES (%s, 'loaded', now() - make_interval(days => %s),"
                " now() - make_interval(days => %s))",
                (message_id, days, days),
            )
    assert make_handler(db).prune({"source": "aws.events"}, Context()) == {"pruned": 1}
    assert [r[0] for r in query(db, "SELECT message_id FROM login_etl_ledger")] == ["kept"]


COLD_START = r"""
import json, resource, sys
event, n = json.loads(sys.stdin.read()), int(sys.argv[1])
import login_etl.aws_lambda as aws_lambda

class Context:
    aws_request_id = "cold"
    function_name = "login-etl"
    def get_remaining_time_in_millis(self):
        return 60_000

answers = [aws_lambda.handler({"Records": event["Records"][i::n]}, Context()) for i in range(n)]
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"answers": answers, "cpu_s": r.ru_utime + r.ru_stime}))
"""


def test_the_module_handler_starts_once_from_the_environment(
    db, sqs_client, queue_url, etl_env
) -> None:
    """As Lambda runs it: a fresh process, settings from LOGIN_ETL_*, `handler` called twice."""
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(6)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
    env.update(LOGIN_ETL_DATABASE_URL=db, LOGIN_ETL_MASKING_KEY=etl_env.key)
    done = subprocess.run(
        [sys.executable, "-c", COLD_START, "2"],
        input=json.dumps(ev),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    result = lines[-1]
    assert result["answers"] == [{"batchItemFailures": []}] * 2
    assert result["cpu_s"] > 0
    emf = [d for d in lines if "_aws" in d]
    assert [(d["cold_start"], d["loaded"], d["request_id"]) for d in emf] == [
        (1, 3, "cold"),
        (0, 3, "cold"),
    ]
    assert counts(db) == (6, 0, 6)


def test_a_write_that_would_outlast_the_invocation_is_cut_and_reported_failed(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    slow_inserts(db, 0.5)  # ten rows: five seconds of INSERT
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(10)])
    context = Context(remaining_ms=3_500)  # a write may take 2.5 s of it
    assert failures(make_handler(db)(ev, context)) == ids(ev)
    out = capsys.readouterr().out
    assert re.search(r"hung for 2(\.\d+)?s", out)  # cut at the time left less the margin
    assert "too little to write" in out  # and no second attempt without the time for it
    assert counts(db) == (0, 0, 0)


def call_in_thread(handler: Handler, ev: dict, context: Context) -> tuple[threading.Thread, dict]:
    """Start `handler(ev, context)`; its answer lands in the dict, with ``left``, the
    milliseconds the context still had when it returned."""
    answer: dict = {}

    def run() -> None:
        answer.update(handler(ev, context))
        answer["left"] = context.get_remaining_time_in_millis()

    call = threading.Thread(target=run, daemon=True)
    call.start()
    return call, answer


def test_a_server_that_never_answers_the_connect_is_given_only_the_time_left(
    sqs_client, queue_url, make_handler
) -> None:
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    with socket.create_server(("127.0.0.1", 0)) as hung:  # the kernel accepts; no one answers
        port = hung.getsockname()[1]
        handler = make_handler(f"postgresql://etl@127.0.0.1:{port}/etl?sslmode=disable")
        call, answer = call_in_thread(handler, ev, Context(remaining_ms=4_000))
        call.join(60)
        assert not call.is_alive()
    assert failures(answer) == ids(ev)
    assert answer["left"] > 0  # answered before Lambda would have stopped it


def test_a_table_locked_at_cold_start_is_waited_for_only_the_time_left(
    db, sqs_client, queue_url, make_handler
) -> None:
    """The first invocation checks the key against the stored masks; a migration or
    `VACUUM FULL` holding the table must not keep it past its time."""
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    handler = make_handler(db)
    with psycopg.connect(db) as locker:
        locker.execute("LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        call, answer = call_in_thread(handler, ev, Context(remaining_ms=4_000))
        call.join(30)
        stuck = call.is_alive()
        locker.rollback()
    call.join(30)
    assert not stuck
    assert failures(answer) == ids(ev)
    assert answer["left"] > 0
    assert counts(db) == (0, 0, 0)
    assert failures(handler(ev, Context())) == []  # the lock gone, they load
    assert counts(db) == (3, 0, 3)


def test_a_row_postgresql_refuses_is_a_rejection_and_the_rest_load(
    db, sqs_client, queue_url, make_handler
) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(REFUSE_POISON)
    bodies = [event(i) for i in range(6)]
    bodies[2] = event(2, user_id="poison-2")
    ev = delivered(sqs_client, queue_url, bodies)
    assert failures(make_handler(db)(ev, Context())) == []
    assert counts(db) == (5, 1, 6)
    assert query(db, "SELECT reason FROM user_logins_rejected") == [("db_error:P0001",)]


def test_a_record_the_transform_breaks_on_fails_alone_and_its_text_is_not_logged(
    db, sqs_client, queue_url, make_handler, monkeypatch, capsys
) -> None:
    import login_etl.aws_lambda as aws_lambda

    real = aws_lambda.transform
    bodies = [event(i, ip=f"198.51.100.{i}") for i in range(4)]
    secret = json.loads(bodies[1])

    def breaks_on_the_second(message: Any, masker: Any) -> Any:
        if message.body == bodies[1]:
            raise ValueError(f"cannot handle {secret['ip']} {secret['device_id']}")
        return real(message, masker)

    monkeypatch.setattr(aws_lambda, "transform", breaks_on_the_second)
    ev = delivered(sqs_client, queue_url, bodies)
    broken = next(r["messageId"] for r in ev["Records"] if r["body"] == bodies[1])
    assert failures(make_handler(db)(ev, Context())) == [broken]
    assert counts(db) == (3, 0, 3)
    out = capsys.readouterr().out
    assert broken in out
    assert secret["ip"] not in out and secret["device_id"] not in out


def test_a_message_listed_twice_in_one_event_loads_once(
    db, sqs_client, queue_url, make_handler
) -> None:
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    ev["Records"].append(dict(ev["Records"][0]))
    assert failures(make_handler(db)(ev, Context())) == []
    assert counts(db) == (3, 0, 3)


def test_an_event_with_a_record_without_a_message_id_fails_whole_and_commits_nothing(
    db, sqs_client, queue_url, make_handler
) -> None:
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    del ev["Records"][1]["messageId"]
    with pytest.raises(ValueError, match="messageId"):
        make_handler(db)(ev, Context())
    assert counts(db) == (0, 0, 0)


def test_settings_and_the_key_check_are_made_once_per_environment(
    db, sqs_client, queue_url, monkeypatch
) -> None:
    import login_etl.aws_lambda as aws_lambda

    checks: list[str] = []
    real = aws_lambda.check_keys

    def counted(conn: Any, masker: Any) -> None:
        checks.append(masker.key_id)
        real(conn, masker)

    monkeypatch.setattr(aws_lambda, "check_keys", counted)
    env = {"LOGIN_ETL_DATABASE_URL": db, "LOGIN_ETL_MASKING_KEY": generate_key()}
    handler = Handler(env)
    try:
        for start in (0, 2, 4):
            ev = delivered(sqs_client, queue_url, [event(i) for i in range(start, start + 2)])
            assert failures(handler(ev, Context())) == []
            env["LOGIN_ETL_LOG_LEVEL"] = "loud"  # were the settings read again, this refuses
    finally:
        handler.close()
    assert len(checks) == 1
    assert counts(db) == (6, 0, 6)


def test_a_key_that_made_none_of_the_stored_masks_is_refused_before_any_write(
    db, sqs_client, queue_url, make_handler, capsys
) -> None:
    assert failures(make_handler(db)(delivered(sqs_client, queue_url, [event(1)]), Context())) == []
    key = generate_key()
    other = make_handler(db, key=key)  # a new environment, a mistyped key
    with pytest.raises(ConfigError, match="LOGIN_ETL_MASKING_KEY") as refused:
        other(delivered(sqs_client, queue_url, [event(2)]), Context())
    assert counts(db) == (1, 0, 1)
    assert key not in str(refused.value) and key not in capsys.readouterr().out


class Relay:
    """A TCP port in front of PostgreSQL; once `silent`, it accepts new connections and
    never answers them (a failover target still booting, a black-holed route); with
    `latency`, a new connection reaches the server that many seconds late."""

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(url)
        self._upstream = (str(params["host"]), int(params["port"]))
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = make_conninfo(url, host="127.0.0.1", port=str(self._server.getsockname()[1]))
        self.silent = threading.Event()
        self.latency = 0.0
        self._sockets: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            self._sockets.append(client)
            if not self.silent.is_set():
                threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        threading.Event().wait(self.latency)  # the slow network being simulated
        upstream = socket.create_connection(self._upstream)
        self._sockets.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for s in self._sockets:
            s.close()


def test_a_reconnect_to_a_silent_server_is_given_only_the_time_left(
    db, sqs_client, queue_url, make_handler
) -> None:
    """A warm environment's connection dies and the new one never answers: the
    reconnect inside the write must not outlast the invocation."""
    relay = Relay(db)
    try:
        handler = make_handler(relay.url)
        assert failures(handler(delivered(sqs_client, queue_url, [event(0)]), Context())) == []
        relay.silent.set()
        drop_connection(db)
        ev = delivered(sqs_client, queue_url, [event(i) for i in range(1, 4)])
        call, answer = call_in_thread(handler, ev, Context(remaining_ms=5_000))
        call.join(60)
        assert not call.is_alive()
    finally:
        relay.close()
    assert failures(answer) == ids(ev)
    assert answer["left"] > 0
    assert counts(db) == (1, 0, 1)


def test_a_body_over_the_size_limit_is_a_rejection_not_a_failure(
    db, sqs_client, queue_url, make_handler
) -> None:
    """SQS takes bodies up to 1 MiB; the parser stops at its own limit."""
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    ev["Records"][1]["body"] = event(1, user_id="u" * (1024 * 1024 - 200))
    assert failures(make_handler(db)(ev, Context())) == []
    assert counts(db) == (2, 1, 3)


def test_a_standard_queue_with_message_groups_fails_only_the_unreadable_record(
    db, sqs_client, queue_url, make_handler
) -> None:
    """A fair queue's group ids ask for no order: a failure does not spread to its group."""
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(4)])
    for r in ev["Records"]:
        r["attributes"]["MessageGroupId"] = "tenant-1"
    ev["Records"][0]["attributes"]["SentTimestamp"] = "garbled"
    assert failures(make_handler(db)(ev, Context())) == [ids(ev)[0]]
    assert counts(db) == (3, 0, 3)


def test_kms_unreachable_at_cold_start_errors_the_invocation_and_the_next_one_retries(
    db, sqs_client, queue_url, aws_env, make_handler, monkeypatch, capsys
) -> None:
    import boto3

    kms_key = boto3.client("kms").create_key()["KeyMetadata"]["KeyId"]
    wrapped = kms.new_data_key(kms_key)
    handler = make_handler(db, key=wrapped)
    ev = delivered(sqs_client, queue_url, [event(i) for i in range(3)])
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # nothing listens
    with pytest.raises(KeyServiceUnavailable) as down:
        handler(ev, Context())
    assert wrapped[4:20] not in str(down.value)  # not even part of the ciphertext
    assert counts(db) == (0, 0, 0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env["AWS_ENDPOINT_URL"])
    assert failures(handler(ev, Context())) == []
    assert counts(db) == (3, 0, 3)
    assert wrapped[4:20] not in capsys.readouterr().out


def test_a_slow_reconnect_leaves_the_write_only_what_remains(
    db, sqs_client, queue_url, make_handler
) -> None:
    """The write's deadline counts the time its reconnect took."""
    relay = Relay(db)
    try:
        handler = make_handler(relay.url)
        assert failures(handler(delivered(sqs_client, queue_url, [event(0)]), Context())) == []
        slow_inserts(db, 0.5)  # ten rows: five seconds of INSERT
        relay.latency = 2.0
        drop_connection(db)
        ev = delivered(sqs_client, queue_url, [event(i) for i in range(1, 11)])
        call, answer = call_in_thread(handler, ev, Context(remaining_ms=4_500))
        call.join(60)
        assert not call.is_alive()
    finally:
        relay.close()
    assert failures(answer) == ids(ev)
    assert answer["left"] > 0
    assert counts(db) == (1, 0, 1)
