"""Every SQS a user meets: the JSON protocol (moto 5, as AWS and LocalStack 3+)
and the query protocol only (moto 4.1.8, as LocalStack before 3.0 in the
brief's compose image, and ElasticMQ before 1.4), through the public CLI.

No test here sets LOGIN_ETL_SQS_PROTOCOL unless it says so: the client must
find the protocol by itself.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from login_etl.masking import Masker, decode_key
from login_etl.transform import open_body

from .helpers import (
    Env,
    cli,
    drain,
    error_lines,
    make_messages,
    query,
    send,
    slow_inserts,
    stats_line,
)

FOUND_QUERY = "SQS endpoint speaks only the query protocol"


def loaded(env: Env) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """Every user_logins row, and every rejection as (reason, body), both sorted."""
    rows = query(env.database_url, "SELECT * FROM user_logins")
    masker = Masker(decode_key(env.key))
    rejected = [
        (reason, open_body(masker, sealed, message_id))
        for reason, sealed, message_id in query(
            env.database_url, "SELECT reason, sealed_body, message_id FROM user_logins_rejected"
        )
    ]
    return sorted(rows, key=repr), sorted(rejected)


def test_the_brief_records_load_alike_through_either_protocol(
    sample_path: Path, etl_env: Env, query_env: Env
) -> None:
    query_env = replace(query_env, key=etl_env.key)  # one key: the same masks
    results = []
    for env in (etl_env, query_env):
        seeded = cli(env.vars(), "seed", str(sample_path))
        assert seeded.returncode == 0, seeded.stderr
        assert seeded.stdout.strip() == "sent 100 messages"
        log = drain(env.vars())
        stats = stats_line(log)
        assert (stats["loaded"], stats["rejected"]) == (99, 1), log
        # moto, like SQS, may hand one message to two concurrent receives: a second
        # copy may only be a duplicate the ledger skipped, never a second row.
        assert stats["duplicates"] <= stats["received"] - 100, log
        assert (FOUND_QUERY in log) == (env is query_env), log
        results.append(loaded(env))
    (json_rows, json_rejected), (query_rows, query_rejected) = results
    assert len(json_rows) == 99
    assert [reason for reason, _ in json_rejected] == ["missing_field:user_id"]
    assert json.loads(json_rejected[0][1]) == {"foo": "oops_wrong_msg_type", "bar": "123"}
    assert query_rows == json_rows
    assert query_rejected == json_rejected


def test_status_counts_the_dead_letter_queue_on_the_query_server(
    query_env: Env, query_sqs_client: Any
) -> None:
    client = query_sqs_client
    base = query_env.queue_url.rsplit("/", 1)[-1]
    dlq = client.create_queue(QueueName=f"{base}-dlq")["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "1"})
    main = client.create_queue(QueueName=f"{base}-main", Attributes={"RedrivePolicy": policy})[
        "QueueUrl"
    ]
    send(client, main, ["a", "b", "c", "d", "e"])
    # Received once and not deleted: with maxReceiveCount 1 the next receive redrives them.
    client.receive_message(QueueUrl=main, MaxNumberOfMessages=3, VisibilityTimeout=0)
    client.receive_message(QueueUrl=main, MaxNumberOfMessages=10, VisibilityTimeout=60)

    done = cli(query_env.vars(LOGIN_ETL_QUEUE_URL=main), "status", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)["queue"]
    assert (doc["dlq_url"], doc["dlq_visible"]) == (dlq, 3)
    assert (doc["visible"], doc["in_flight"]) == (0, 2)


def test_the_heartbeat_extends_visibility_on_the_query_server(
    query_env: Env, query_sqs_client: Any
) -> None:
    client = query_sqs_client
    client.set_queue_attributes(QueueUrl=query_env.queue_url, Attributes={"VisibilityTimeout": "2"})
    slow_inserts(query_env.database_url, 0.05)  # a batch of 100 takes about 5 s: 2.5 timeouts
    batch = make_messages(200, seed=15, bad_rate=0.03)
    send(client, query_env.queue_url, batch.bodies)
    log = drain(
        query_env.vars(), "--batch-size", "100", "--batch-wait-seconds", "1", "--concurrency", "1"
    )
    slowest = max(float(ms) for ms in re.findall(r"batch committed .* ms=([\d.]+)", log))
    assert slowest > 4000  # the premise: a batch outlived the visibility timeout twice
    stats = stats_line(log)
    # Without extensions its messages would have come back while it was written.
    assert stats["duplicates"] == 0 and stats["received"] == len(batch.bodies), stats
    assert stats["loaded"] + stats["rejected"] == len(batch.bodies)


# -- forcing a protocol, and endpoints that speak neither ----------------------------


def test_forcing_json_on_the_query_server_is_one_line_naming_it(query_env: Env) -> None:
    done = cli(query_env.vars(LOGIN_ETL_SQS_PROTOCOL="json"), "status")
    assert done.returncode == 2, done.stderr
    [line] = error_lines(done.stderr)
    assert query_env.aws["AWS_ENDPOINT_URL"] in line
    assert "HTTP 400" in line and "set LOGIN_ETL_SQS_PROTOCOL / --sqs-protocol to auto" in line
    assert "Traceback" not in done.stderr


def test_forcing_query_works_on_a_json_server(etl_env: Env, sqs_client: Any) -> None:
    send(sqs_client, etl_env.queue_url, ["a", "b"])
    done = cli(etl_env.vars(), "status", "--json", "--sqs-protocol", "query")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["queue"]["visible"] == 2


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the server's one status, content type and body."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        status, content_type, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def not_sqs() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server that is no SQS: set its `answer` to (status, content type, body)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _aimed_at(env: Env, server: ThreadingHTTPServer) -> dict[str, str]:
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    return env.vars(AWS_ENDPOINT_URL=endpoint, LOGIN_ETL_MAX_RETRY_TIME="1")


def test_an_endpoint_speaking_neither_protocol_is_a_config_error(
    etl_env: Env, not_sqs: ThreadingHTTPServer
) -> None:
    text = b"The requested resource could not be found."  # akka-http's, as ElasticMQ's
    not_sqs.answer = (404, "text/plain", text)  # type: ignore[attr-defined]
    env = _aimed_at(etl_env, not_sqs)
    for command in (["status"], ["run", "--drain"]):
        done = cli(env, *command)
        assert done.returncode == 2, (command, done.stderr)
        [line] = error_lines(done.stderr)
        assert env["AWS_ENDPOINT_URL"] in line, line
        assert "speaks neither SQS protocol" in line
        assert line.count("HTTP 404 (text/plain): The requested resource could not be found.") == 2


def test_an_error_page_from_a_proxy_is_an_outage(
    etl_env: Env, not_sqs: ThreadingHTTPServer
) -> None:
    page = b"<html><body>Service Unavailable</body></html>"
    not_sqs.answer = (503, "text/html", page)  # type: ignore[attr-defined]
    env = _aimed_at(etl_env, not_sqs)
    done = cli(env, "run", "--drain")
    assert done.returncode == 1, done.stderr
    [line] = error_lines(done.stderr)
    assert env["AWS_ENDPOINT_URL"] in line and "HTTP 503 (text/html): Service Unavailable" in line


def test_a_forced_protocol_on_something_not_sqs_says_so(
    etl_env: Env, not_sqs: ThreadingHTTPServer
) -> None:
    page = b"<!DOCTYPE html><html><body>Forbidden by proxy</body></html>"
    not_sqs.answer = (403, "text/html", page)  # type: ignore[attr-defined]
    for protocol in ("json", "query"):
        env = _aimed_at(etl_env, not_sqs) | {"LOGIN_ETL_SQS_PROTOCOL": protocol}
        done = cli(env, "status")
        assert done.returncode == 2, (protocol, done.stderr)
        [line] = error_lines(done.stderr)
        assert env["AWS_ENDPOINT_URL"] in line
        assert "HTTP 403 (text/html): Forbidden by proxy" in line
        assert "not SQS: check AWS_ENDPOINT_URL" in line and "--sqs-protocol" not in line
