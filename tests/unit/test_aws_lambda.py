"""The Lambda handler's pure parts: records to messages, the FIFO rule, settings, imports."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from login_etl.aws_lambda import (
    LambdaSettings,
    failing_ids,
    group_of,
    message_from_record,
    response,
)
from login_etl.errors import ConfigError
from login_etl.masking import generate_key

FIFO_ARN = "arn:aws:sqs:us-east-1:123456789012:logins.fifo"
STANDARD_ARN = "arn:aws:sqs:us-east-1:123456789012:logins"


def record(message_id: str = "m-1", **attributes: str) -> dict:
    """One record as Lambda's SQS event source mapping sends it."""
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB-receipt",
        "body": '{"user_id": "u"}',
        "attributes": {
            "ApproximateReceiveCount": "3",
            "SentTimestamp": "1764806400123",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1764806400200",
        }
        | attributes,
        "messageAttributes": {},
        "md5OfBody": "0",
        "eventSource": "aws:sqs",
        "eventSourceARN": STANDARD_ARN,
        "awsRegion": "us-east-1",
    }


def test_a_record_becomes_the_message_a_worker_would_receive() -> None:
    m = message_from_record(record())
    assert (m.message_id, m.receipt, m.body, m.receive_count) == (
        "m-1",
        "AQEB-receipt",
        '{"user_id": "u"}',
        3,
    )
    assert m.sent_at == datetime(2025, 12, 4, 0, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda r: r["attributes"].pop("SentTimestamp"), KeyError),
        (lambda r: r["attributes"].update(SentTimestamp="soon"), ValueError),
        (lambda r: r.update(body=None), TypeError),
        (lambda r: r.pop("body"), KeyError),
    ],
)
def test_a_record_without_a_text_body_or_sent_time_cannot_be_read(change, error) -> None:
    r = record()
    change(r)
    with pytest.raises(error):
        message_from_record(r)


def test_only_a_fifo_source_has_groups() -> None:
    fifo = record(MessageGroupId="A") | {"eventSourceARN": FIFO_ARN}
    assert group_of(fifo) == "A"
    assert group_of(record(MessageGroupId="A")) is None  # a fair standard queue: no order


@pytest.mark.parametrize(
    ("records", "failed", "expected"),
    [
        # standard queue: only the failed records
        ([("1", None), ("2", None), ("3", None)], {"2"}, ["2"]),
        ([("1", None), ("2", None)], set(), []),
        # FIFO: the group's later records fail too, earlier ones and other groups do not
        ([("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("a3", "A")], {"a2"}, ["a2", "a3"]),
        ([("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B")], {"a1", "b2"}, ["a1", "a2", "b2"]),
        ([("a1", "A"), ("a2", "A")], {"a2"}, ["a2"]),
        # every record: all, each once, in event order
        ([("a1", "A"), ("b1", "B"), ("a1", "A")], {"a1", "b1"}, ["a1", "b1"]),
    ],
)
def test_failing_ids(records, failed, expected) -> None:
    assert failing_ids(records, failed) == expected


def test_the_response_names_items_as_lambda_reads_them() -> None:
    assert response(["x", "y"]) == {
        "batchItemFailures": [{"itemIdentifier": "x"}, {"itemIdentifier": "y"}]
    }
    assert response([]) == {"batchItemFailures": []}


def test_settings_come_from_the_same_variables_and_files(tmp_path) -> None:
    key = generate_key()
    path = tmp_path / "key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    url = "postgresql://etl:s3cret-pw@db.internal:5432/logins"
    s = LambdaSettings.load(
        {
            "LOGIN_ETL_DATABASE_URL": url,
            "LOGIN_ETL_MASKING_KEY_FILE": str(path),
            "LOGIN_ETL_QUEUE_URL": "ignored: the mapping delivers",
        }
    )
    assert (s.database_url, s.masking_key, s.masking_old_keys) == (url, key, "")
    assert key not in repr(s) and "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LOGIN_ETL_MASKING_KEY": "k", "LOGIN_ETL_MASKING_KEY_FILE": "/x"}, "not both"),
        ({"LOGIN_ETL_DATABASE_URL_FILE": "/nonexistent/url"}, "cannot read"),
        ({"LOGIN_ETL_LAKE_WAREHOUSE": "file:///lake"}, "does not feed the lake"),
        ({"LOGIN_ETL_LOG_LEVEL": "loud"}, "LOGIN_ETL_LOG_LEVEL"),
        ({"LOGIN_ETL_DATABASE_URL": "postgresql://h:99999/db"}, "invalid port"),
    ],
)
def test_bad_settings_are_one_config_error(env, says) -> None:
    with pytest.raises(ConfigError, match=says):
        LambdaSettings.load(env)


def test_importing_the_handler_imports_no_cli_metrics_or_lake() -> None:
    code = (
        "import json, sys, login_etl.aws_lambda\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(done.stdout))
    assert "login_etl" in loaded
    heavy = {"click", "rich", "prometheus_client", "pyiceberg", "pyarrow", "boto3", "botocore"}
    assert loaded & heavy == set()
