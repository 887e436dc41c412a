"""`login-etl status` against a real queue (moto over HTTP) and a real database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from login_etl import service
from login_etl.cli import cli
from login_etl.config import Settings
from login_etl.dev.seed import synthetic
from login_etl.sqs import SqsSource
from tests.oracle import outcome

from .helpers import Env


def status_json(*args: str) -> dict[str, Any]:
    """`login-etl status --json` in-process; the settings come from the environment."""
    result = CliRunner().invoke(cli, ["status", "--json", *args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1, "one JSON object on one line"
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def test_empty_queue_and_database_without_tables(etl_env: Env) -> None:
    doc = status_json()
    assert doc == {
        "queue": {
            "url": etl_env.queue_url,
            "visible": 0,
            "in_flight": 0,
            "delayed": 0,
            "dlq_url": None,
            "dlq_visible": None,
        },
        "rows_loaded": 0,
        "rejected": 0,
        "rejections": {},
        "last_load_at": None,
    }


def test_depth_rows_and_rejections_before_and_after_draining(etl_env: Env, sqs_client: Any) -> None:
    bodies = synthetic(60, 11) + ['{"foo": "oops_wrong_msg_type", "bar": "123"}', "not json"]
    valid, reasons = outcome(bodies)
    assert reasons["missing_field:user_id"] >= 1 and reasons["invalid_json"] >= 1
    assert SqsSource(etl_env.queue_url, client=sqs_client).send_bodies(bodies) == len(bodies)
    sqs_client.send_message(QueueUrl=etl_env.queue_url, MessageBody="{}", DelaySeconds=900)
    held = sqs_client.receive_message(
        QueueUrl=etl_env.queue_url, MaxNumberOfMessages=2, VisibilityTimeout=300
    )["Messages"]

    before = status_json()
    assert before["queue"]["visible"] == len(bodies) - len(held)
    assert before["queue"]["in_flight"] == len(held)
    assert before["queue"]["delayed"] == 1
    assert (before["rows_loaded"], before["rejected"], before["last_load_at"]) == (0, 0, None)
    for message in held:  # handed back, as a receiver that gives up would
        sqs_client.change_message_visibility(
            QueueUrl=etl_env.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )

    started = datetime.now(UTC)
    stats = service.run(Settings.load(), drain=True)
    assert stats.loaded + stats.rejected == len(bodies)

    after = status_json()
    assert after["queue"]["visible"] == 0
    assert after["queue"]["in_flight"] == 0
    assert after["queue"]["delayed"] == 1  # not due for 15 minutes
    assert after["rows_loaded"] == len(valid) == stats.loaded
    assert after["rejections"] == dict(reasons)
    assert after["rejected"] == sum(reasons.values())
    last = datetime.fromisoformat(after["last_load_at"])
    assert started - timedelta(seconds=5) <= last <= datetime.now(UTC) + timedelta(seconds=5)


@pytest.fixture
def queue_with_dlq(sqs_client: Any, etl_env: Env) -> Iterator[tuple[str, str]]:
    """A queue whose redrive policy sends to a DLQ; (queue url, dlq url)."""
    base = etl_env.queue_url.rsplit("/", 1)[-1]
    dlq = sqs_client.create_queue(QueueName=f"{base}-dlq")["QueueUrl"]
    arn = sqs_client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "1"})
    main = sqs_client.create_queue(QueueName=f"{base}-main", Attributes={"RedrivePolicy": policy})[
        "QueueUrl"
    ]
    try:
        yield main, dlq
    finally:
        sqs_client.delete_queue(QueueUrl=main)
        sqs_client.delete_queue(QueueUrl=dlq)


def test_dead_letter_queue_count(
    queue_with_dlq: tuple[str, str], sqs_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    main, dlq = queue_with_dlq
    SqsSource(main, client=sqs_client).send_bodies(["a", "b", "c", "d", "e"])
    # Received once and not deleted: with maxReceiveCount 1 the next receive redrives them.
    sqs_client.receive_message(QueueUrl=main, MaxNumberOfMessages=3, VisibilityTimeout=0)
    sqs_client.receive_message(QueueUrl=main, MaxNumberOfMessages=10, VisibilityTimeout=60)
    monkeypatch.setenv("LOGIN_ETL_QUEUE_URL", main)

    doc = status_json()
    assert doc["queue"]["dlq_url"] == dlq
    assert doc["queue"]["dlq_visible"] == 3
    assert doc["queue"]["visible"] == 0
    assert doc["queue"]["in_flight"] == 2

    text = CliRunner().invoke(cli, ["status"])
    assert text.exit_code == 0, text.output
    assert "dead-letter queue (visible)" in text.stdout


def test_only_the_analysts_table_and_no_queue(
    etl_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brief's image creates user_logins alone; no queue configured is fine too."""
    with psycopg.connect(etl_env.database_url) as conn:
        conn.execute(
            "CREATE TABLE user_logins(user_id varchar(128), device_type varchar(32), "
            "masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32), "
            "app_version integer, create_date date)"
        )
        conn.execute("INSERT INTO user_logins (user_id) VALUES ('a'), ('b')")
    monkeypatch.delenv("LOGIN_ETL_QUEUE_URL")

    doc = status_json()
    assert doc["queue"] is None
    assert (doc["rows_loaded"], doc["rejections"], doc["last_load_at"]) == (2, {}, None)

    text = CliRunner().invoke(cli, ["status"])
    assert text.exit_code == 0, text.output
    assert "not configured" in text.stdout
    assert any(line.split()[-1:] == ["2"] for line in text.stdout.splitlines() if "rows" in line)


def test_missing_queue_is_a_one_line_config_error(etl_env: Env) -> None:
    missing = etl_env.queue_url + "-missing"
    result = CliRunner().invoke(cli, ["status", "--queue-url", missing])
    assert result.exit_code == 2
    assert result.stderr.startswith("login-etl: error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_database_fails_cleanly(etl_env: Env) -> None:
    url = "postgresql://postgres@127.0.0.1:9/nowhere"
    result = CliRunner().invoke(cli, ["status", "--database-url", url])
    assert result.exit_code == 1
    assert result.stderr.startswith("login-etl: error: cannot connect to PostgreSQL")
