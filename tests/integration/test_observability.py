"""Metrics and logs of a running worker: counters, reasons, and no PII."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest

from login_etl import __version__
from login_etl.dev.local import LocalPostgres, free_port
from login_etl.masking import generate_key

from .helpers import Env, event, send


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("login_etl_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of one GET; error statuses too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_metrics_endpoint_and_json_logs(etl_env, sqs_client) -> None:
    # The second rejection carries an ip: a rejected body must not leak it either.
    bodies = [event(i) for i in range(20)] + ["not json", event(99, user_id=None)]
    send(sqs_client, etl_env.queue_url, bodies)
    port = free_port()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "login_etl",
            "run",
            "--metrics-port",
            str(port),
            "--log-format",
            "json",
            "--concurrency",
            "1",  # moto may hand one message to two concurrent receives: keep counts exact
        ],
        env=etl_env.vars(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        metrics: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                metrics = scrape(port)
            except OSError:
                metrics = {}
            # Deletes follow the commit: wait for them too, not just the outcomes.
            if (
                metrics.get('login_etl_messages_total{outcome="loaded"}', 0)
                + metrics.get('login_etl_messages_total{outcome="rejected"}', 0)
                >= 22
                and metrics.get("login_etl_deleted_total", 0) >= 22
            ):
                break
            time.sleep(0.3)
        assert metrics['login_etl_messages_total{outcome="loaded"}'] == 20
        assert metrics['login_etl_messages_total{outcome="rejected"}'] == 2
        assert metrics['login_etl_messages_total{outcome="duplicate"}'] == 0
        assert metrics['login_etl_rejections_total{reason="invalid_json"}'] == 1
        assert metrics['login_etl_rejections_total{reason="missing_field:user_id"}'] == 1
        assert metrics["login_etl_received_total"] == 22
        assert metrics["login_etl_deleted_total"] == 22
        assert metrics["login_etl_lag_seconds_count"] == 22  # one observation per message
        batches = metrics["login_etl_batches_total"]
        assert batches >= 1 and metrics["login_etl_batch_duration_seconds_count"] == batches
        assert abs(metrics["login_etl_last_commit_timestamp_seconds"] - time.time()) < 120
        assert metrics['login_etl_build_info{version="' + __version__ + '"}'] == 1
        assert 'login_etl_queue_messages{queue="main",state="visible"}' in metrics
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz") == (200, "postgresql ok\nsqs ok\n")
        assert get(port, "/nothing-here")[0] == 404
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b"process_resident_memory_bytes" in text  # the default process collector
        for i in [*range(20), 99]:
            assert not re.search(rf"10\.0\.0\.{i}(?!\d)".encode(), text)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=40)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()  # also closes the stderr pipe
    assert worker.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert {"worker started", "batch committed", "worker stopped"} <= {r["msg"] for r in lines}
    assert all(r["level"] in {"info", "warning"} for r in lines)
    assert sum(r.get("loaded", 0) for r in lines if r["msg"] == "batch committed") == 20
    for i in [*range(20), 99]:  # no plaintext ip in any log line
        assert not re.search(rf"10\.0\.0\.{i}(?!\d)", stderr), i
    assert etl_env.key not in stderr


@pytest.fixture
def own_pg() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, free to stop and restart."""
    with LocalPostgres() as server:
        yield server


def wait_status(port: int, path: str, status: int, timeout: float) -> float:
    """Seconds until `path` answers `status`; fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if get(port, path)[0] == status:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{path} did not answer {status} within {timeout}s")


@pytest.mark.timeout(180)
def test_readyz_follows_postgres_down_and_up(own_pg, queue_url, aws_env) -> None:
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE etl")
    env = Env(queue_url, own_pg.url_for("etl"), generate_key(), aws_env)
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "login_etl", "run", "--metrics-port", str(port)],
        env=env.vars(LOGIN_ETL_MAX_RETRY_TIME="120"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_status(port, "/readyz", 200, 60)
        assert get(port, "/healthz")[0] == 200
        own_pg.stop("fast")
        # An idle worker notices: no write fails, its probe thread finds out. Had the
        # probes stopped, both answers would have gone stale and SQS would read down too.
        wait_status(port, "/readyz", 503, 60)
        status, body = get(port, "/readyz")
        assert "postgresql down" in body and "sqs ok" in body
        assert get(port, "/healthz")[0] == 200  # not stuck: only not ready
        own_pg.start()
        wait_status(port, "/readyz", 200, 15)
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=40)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()  # also closes the stderr pipe
    assert worker.returncode == 0, stderr
