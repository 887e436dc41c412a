"""Helpers for integration tests: messages to send, workers to run as a user
would, and the checks every fault test ends with.

Fixtures live in conftest.py; everything else shared lives here, so test
modules never import each other.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from login_etl.cli import cli as login_etl_cli
from login_etl.masking import Masker, decode_key
from login_etl.pgsink import PostgresSink
from login_etl.sink import Batch
from login_etl.source import Message
from login_etl.transform import open_body, reject, transform
from tests.oracle import USER_LOGINS_DDL


@dataclass
class Env:
    """Everything a worker needs, as environment variables."""

    queue_url: str
    database_url: str
    key: str
    aws: dict[str, str]

    def vars(self, **extra: str) -> dict[str, str]:
        """A complete environment for a `login-etl` subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOGIN_ETL_")}
        env.update(self.aws)
        env.update(
            LOGIN_ETL_QUEUE_URL=self.queue_url,
            LOGIN_ETL_DATABASE_URL=self.database_url,
            LOGIN_ETL_MASKING_KEY=self.key,
            LOGIN_ETL_WAIT_TIME="1",
            LOGIN_ETL_BATCH_WAIT_SECONDS="0.2",
        )
        env.update(extra)
        return env


# -- messages ------------------------------------------------------------------


def event(i: int, **over: Any) -> str:
    """One valid login event for user `user-<i>`, with fields replaced by `over`."""
    base = {
        "user_id": f"user-{i}",
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": f"10.0.{i // 250}.{i % 250}",
        "locale": "RU",
        "device_id": f"{100 + i % 900}-00-{i:04d}",
    }
    base.update(over)
    return json.dumps(base)


@dataclass
class Sent:
    """Bodies to send: which user ids must load, and which bodies must be rejected."""

    bodies: list[str]
    good: set[str]
    bad: list[str]

    def __add__(self, other: Sent) -> Sent:
        return Sent(self.bodies + other.bodies, self.good | other.good, self.bad + other.bad)


def make_messages(n: int, *, seed: int, bad_rate: float = 0.0, tag: str = "u") -> Sent:
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
    return Sent(bodies, good, bad)


# -- queue ---------------------------------------------------------------------


def send(client: Any, queue_url: str, bodies: list[str]) -> None:
    """Send bodies ten at a time; every one must be accepted."""
    for i in range(0, len(bodies), 10):
        entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(bodies[i : i + 10])]
        assert not client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")


def queue_depth(client: Any, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) of a queue."""
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


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
                if sum(queue_depth(self.client, self.queue_url)) > self.max_depth - 100:
                    self.halt.wait(0.2)
                    continue
                chunk = self.bodies[self.sent : self.sent + 100]
                send(self.client, self.queue_url, chunk)
                self.sent += len(chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc


# -- database ------------------------------------------------------------------


def query(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one query on `url` and return all rows."""
    with psycopg.connect(url) as conn:
        return conn.execute(statement, params or None).fetchall()


def scalar(url: str, statement: str, *params: Any) -> Any:
    """First column of the first row."""
    return query(url, statement, *params)[0][0]


def dump_text(url: str) -> str:
    """Every value of every table in the public schema, as one string."""
    out = []
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        ]
        for t in tables:
            for row in conn.execute(
                sql.SQL("SELECT * FROM {}").format(sql.Identifier(t))
            ).fetchall():
                out.append(" ".join(str(v) for v in row))
    return "\n".join(out)


def counts(url: str) -> tuple[int, int, int]:
    """(rows, rejections, ledger entries)."""
    return (
        scalar(url, "SELECT count(*) FROM user_logins"),
        scalar(url, "SELECT count(*) FROM user_logins_rejected"),
        scalar(url, "SELECT count(*) FROM login_etl_ledger"),
    )


def done_count(url: str) -> int:
    """Rows plus rejections; 0 before a worker created the tables or while the
    server is down."""
    try:
        rows, rejected, _ = counts(url)
    except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
        return 0
    return rows + rejected


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


# -- the promise -----------------------------------------------------------------


def assert_exactly_once(env: Env, sent: Sent) -> None:
    """Every message is one row or one rejection: none twice, none lost, none both."""
    url = env.database_url
    duplicated = query(
        url, "SELECT user_id, count(*) FROM user_logins GROUP BY user_id HAVING count(*) > 1"
    )
    assert duplicated == []
    loaded = {r[0] for r in query(url, "SELECT user_id FROM user_logins")}
    assert loaded == sent.good  # nothing lost, nothing rejected that should load
    masker = Masker(decode_key(env.key))
    rejected = [
        open_body(masker, r[0], r[1])
        for r in query(url, "SELECT sealed_body, message_id FROM user_logins_rejected")
    ]
    assert sorted(rejected) == sorted(sent.bad)  # exactly the malformed ones, each once
    rows, rejections, ledger = counts(url)
    assert (rows, rejections) == (len(sent.good), len(sent.bad))
    assert rows + rejections == ledger == len(sent.bodies)
    outcomes = dict(query(url, "SELECT outcome, count(*) FROM login_etl_ledger GROUP BY 1"))
    expected = {"loaded": len(sent.good), "rejected": len(sent.bad)}
    assert outcomes == {k: v for k, v in expected.items() if v}


def wait_in_flight_lapses(client: Any, queue_url: str) -> None:
    """Wait until no message is in flight (at most the visibility timeout plus slack)."""
    timeout = int(
        client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"])[
            "Attributes"
        ]["VisibilityTimeout"]
    )
    deadline = time.monotonic() + timeout + 15
    while queue_depth(client, queue_url)[1] and time.monotonic() < deadline:
        time.sleep(0.5)


def drain_until_empty(client: Any, queue_url: str, env: dict[str, str], *extra: str) -> dict:
    """Drain, and drain again while messages remain; return the summed counters.

    A drain ends when nothing is visible. Messages whose receive answer moto
    lost (see `assert_queue_empties`) are in flight at that moment and come
    back later: the next drain takes them. At most three rounds.
    """
    total: dict[str, int] = {}
    for _ in range(3):
        for key, value in stats_line(drain(env, *extra)).items():
            total[key] = total.get(key, 0) + value
        if queue_depth(client, queue_url) == (0, 0):
            break
        wait_in_flight_lapses(client, queue_url)
    return total


def assert_queue_empties(client: Any, queue_url: str, env: dict[str, str]) -> None:
    """The queue ends empty, and nothing left in it is new to the ledger.

    moto's receive can fail with a 500 under concurrent calls after it has
    already marked messages received ("Set changed size during iteration");
    like a lost answer from real SQS, those stay in flight until their
    visibility lapses. They then come back, and a drain must skip them all.
    """
    for _ in range(3):
        if queue_depth(client, queue_url) == (0, 0):
            return
        wait_in_flight_lapses(client, queue_url)
        done = cli(env, "run", "--drain")
        assert done.returncode == 0, done.stderr[-3000:]
        stopped = [line for line in done.stderr.splitlines() if "worker stopped" in line]
        assert stopped and " loaded=0 rejected=0 " in stopped[-1], done.stderr[-3000:]
    assert queue_depth(client, queue_url) == (0, 0)


# -- running the CLI -------------------------------------------------------------


def cli(
    env: dict[str, str], *args: str, timeout: float = 120, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run `python -m login_etl ARGS` in a subprocess with `env`."""
    return subprocess.run(
        [sys.executable, "-m", "login_etl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def cli_in_process(
    env: dict[str, str], *args: str, input: str | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`cli` without the process: the same command through click's CliRunner, with
    exactly `env` as the environment, its exit code, stdout and stderr.

    For tests about what a command does and prints, where starting a Python (~0.4 s
    of CPU) proves nothing; signals, exit by a real process and start-up keep `cli`.
    An exception that escapes the command is shown as the traceback a process would
    print, with exit 1. `timeout` is accepted for `cli`'s callers; the test's own
    timeout (pytest-timeout) bounds the call instead.
    """
    del timeout
    unset: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    result = CliRunner().invoke(
        login_etl_cli, list(args), env={**unset, **env}, input=input, prog_name="login-etl"
    )
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(
        ["login-etl", *args], result.exit_code, result.stdout, stderr
    )


def drain(env: dict[str, str], *extra: str, timeout: float = 120) -> str:
    """Run `login-etl run --drain` to completion; return its log."""
    done = cli(env, "run", "--drain", *extra, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def stats_line(log: str) -> dict[str, int]:
    """The counters of the final `worker stopped` line."""
    lines = [line for line in log.splitlines() if "worker stopped" in line]
    assert len(lines) == 1, log[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)\b(?!\.)", lines[0])}


def error_lines(log: str) -> list[str]:
    """The `login-etl: error:` lines of a log."""
    return [line for line in log.splitlines() if line.startswith("login-etl: error:")]


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `check` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


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


# A database rule that refuses some rows: a trigger raises for users named poison*.
REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.user_id LIKE 'poison%' THEN RAISE EXCEPTION 'refused'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON user_logins
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


# -- the lake ----------------------------------------------------------------

LAKE_DAY = datetime(2026, 3, 1, 12, tzinfo=UTC)  # the lake tests' first create_date


def lake_event(i: int, **over: Any) -> dict[str, Any]:
    """An event with a long app version and fields beyond the stored six."""
    base = {
        "user_id": f"user-{i}",
        "app_version": f"{i % 3}.{i % 7}.{i}",
        "device_type": "android" if i % 2 else "ios",
        "ip": f"10.1.{i // 250}.{i % 250}",
        "locale": None if i % 5 == 0 else "RU",
        "device_id": f"{100 + i % 50}-00-{i % 40:04d}",  # devices repeat
        "session": {"length": i, "client": {"ip": f"172.16.0.{i % 250}"}},
        "campaign": f"c{i % 4}",
    }
    base.update(over)
    return base


def lake_records(env) -> list[dict[str, Any]]:
    """Every record in the lake table, as dicts."""
    from login_etl.lake.table import Lake  # the lake extra: imported only where used

    lake = Lake(env.database_url, env.warehouse)
    try:
        table = lake.table()
        if table.current_snapshot() is None:
            return []
        return table.scan().to_arrow().to_pylist()
    finally:
        lake.close()


def load_directly(
    env,
    bodies: list[str],
    sent_at: datetime = LAKE_DAY,
    start: int = 0,
    extra_fields: frozenset[str] = frozenset(),
) -> None:
    """Load bodies through the sink with the lake on, as a worker's batch would.

    `extra_fields` are the names the lake record keeps (LOGIN_ETL_LAKE_EXTRA_FIELDS).
    """
    masker = Masker(decode_key(env.key))
    messages = [Message(f"m-{start + i}", "r", b, sent_at) for i, b in enumerate(bodies)]
    by_id = {m.message_id: m for m in messages}
    rows = [transform(m, masker, lake=True, extra_fields=extra_fields) for m in messages]
    sink = PostgresSink(env.database_url, lake=True)
    try:
        sink.write(
            Batch(
                [r for r in rows if not hasattr(r, "reason")],
                [r for r in rows if hasattr(r, "reason")],
                lambda mid, why: reject(by_id[mid], why, masker),
            )
        )
    finally:
        sink.close()


def lake_flush(env, *extra: str) -> str:
    """`login-etl lake flush` with the env's warehouse; its output."""
    done = cli(env.vars(LOGIN_ETL_LAKE_WAREHOUSE=env.warehouse), "lake", "flush", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def warehouse_bytes(warehouse: str) -> bytes:
    """Every byte of every file in the warehouse (parquet pages are uncompressed-scanned too)."""
    import boto3
    import pyarrow.parquet as pq

    out = []
    if warehouse.startswith("file://"):
        root = warehouse.removeprefix("file://")
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                out.append(Path(path).read_bytes())
                if name.endswith(".parquet"):
                    out.append(json.dumps(pq.read_table(path).to_pylist(), default=str).encode())
        return b"\n".join(out)
    s3 = boto3.client("s3")
    bucket = warehouse.removeprefix("s3://").split("/")[0]
    for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        out.append(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    return b"\n".join(out)


def revealing_commands(*why: str) -> Any:
    """The three commands that reveal PII (the audit comes first in each), as a parametrize
    mark over `command`; "MASK" and "user-1" stand for a mask and a user to look up."""
    return pytest.mark.parametrize(
        "command",
        [
            ["unmask", "--field", "ip", *why, "MASK"],
            ["unmask", "--user-id", "user-1", *why],
            ["rejects", "list", "--json", "--show-bodies", "--reveal-pii", *why],
        ],
        ids=["unmask", "user-id", "show-bodies"],
    )
