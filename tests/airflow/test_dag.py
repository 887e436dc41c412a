"""deploy/airflow/login_etl_drain.py under real Apache Airflow.

Airflow runs from its own venv (AIRFLOW_VENV) with SQLite metadata in a
temporary AIRFLOW_HOME; the DAG calls this project's `login-etl` against a
throwaway PostgreSQL and moto's SQS endpoint. Each outcome is read back from
Airflow's own metadata database and from PostgreSQL, not from log text.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from login_etl.dev.local import LocalPostgres, LocalSqs, free_port, local_aws_env
from login_etl.masking import generate_key
from tests.airflow.conftest import AIRFLOW_VENV, ROOT

DAG_ID = "login_etl_drain"
MESSAGES = 50
# `airflow dags test` of one short drain takes ~10 s here; retries add their delay.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """Environment for the Airflow CLI: a fresh SQLite home, this repo's DAG folder,
    and the project's `login-etl` first on PATH."""
    assert (AIRFLOW_VENV / "bin" / "airflow").exists(), f"no Airflow in {AIRFLOW_VENV}"
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOGIN_ETL_", "AWS_", "PG", "AIRFLOW"))
    }
    env = {
        **base,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")]),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "deploy" / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "LOGIN_ETL_AIRFLOW_RETRY_DELAY": "1",
    }
    _airflow(env, "db", "migrate")
    return env


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=env["AIRFLOW_HOME"] if Path(env["AIRFLOW_HOME"]).exists() else None,
    )
    if args[:2] == ("db", "migrate"):
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _tries(env: dict[str, str]) -> list[tuple[str, int, int]]:
    """(state, try_number, max_tries) of every `drain` task instance Airflow recorded."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute(
            "SELECT state, try_number, max_tries FROM task_instance WHERE dag_id = ?", (DAG_ID,)
        ).fetchall()


@pytest.fixture
def alerts() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on loopback: (its URL, the JSON bodies POSTed to it)."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alert", received
    server.shutdown()
    server.server_close()


def test_dag_imports_cleanly_with_its_retry_policy(airflow_env: dict[str, str]) -> None:
    script = f"""
import json, warnings
warnings.simplefilter("always")
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(ROOT / "deploy" / "airflow")!r})
dag = bag.dags.get({DAG_ID!r})
print(json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "warnings": [str(w) for ws in bag.captured_warnings.values() for w in ws],
    "dags": sorted(bag.dags),
    "tasks": sorted(t.task_id for t in dag.tasks) if dag else [],
    "retries": dag.get_task("drain").retries if dag else None,
    "max_active_runs": dag.max_active_runs if dag else None,
    "catchup": dag.catchup if dag else None,
}}))
"""
    env = {**airflow_env, "LOGIN_ETL_AIRFLOW_RETRIES": "4"}
    done = subprocess.run(
        [str(AIRFLOW_VENV / "bin" / "python"), "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["warnings"] == []
    assert report["dags"] == [DAG_ID]
    assert report["tasks"] == ["drain"]
    assert report["retries"] == 4
    assert report["max_active_runs"] == 1
    assert report["catchup"] is False


def test_dags_test_drains_the_queue_into_postgres(airflow_env: dict[str, str]) -> None:
    with LocalPostgres() as pg, LocalSqs() as sqs:
        aws = local_aws_env(sqs.endpoint)
        client = boto3.client("sqs", **_boto_args(aws))
        queue_url = client.create_queue(QueueName="login-queue")["QueueUrl"]
        worker_env = {
            **aws,
            "LOGIN_ETL_QUEUE_URL": queue_url,
            "LOGIN_ETL_DATABASE_URL": pg.url,
            "LOGIN_ETL_MASKING_KEY": generate_key(),
            "LOGIN_ETL_WAIT_TIME": "1",
            "LOGIN_ETL_BATCH_WAIT_SECONDS": "0.2",
        }
        env = {**airflow_env, **worker_env}
        seeded = subprocess.run(
            ["login-etl", "seed", "--synthetic", str(MESSAGES), "--random-seed", "7"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert seeded.returncode == 0, seeded.stderr
        assert _visible(client, queue_url) == MESSAGES

        done = _airflow(env, "dags", "test", DAG_ID)

        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert _tries(env) == [("success", 1, 3)]
        with psycopg.connect(pg.url) as conn:
            loaded = conn.execute("SELECT count(*) FROM user_logins").fetchone()[0]
            rejected = conn.execute("SELECT count(*) FROM user_logins_rejected").fetchone()[0]
            ledgered = conn.execute("SELECT count(*) FROM login_etl_ledger").fetchone()[0]
        # Every seeded message ends as one row or one rejection; most are good events.
        assert loaded + rejected == MESSAGES == ledgered
        assert loaded > MESSAGES // 2
        assert _visible(client, queue_url) == 0


def test_configuration_error_fails_at_once_and_alerts(
    airflow_env: dict[str, str], alerts: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = alerts
    # No masking key: `login-etl run` exits 2 before touching any service.
    env = {
        **airflow_env,
        "LOGIN_ETL_QUEUE_URL": "http://127.0.0.1:9/000000000000/login-queue",
        "LOGIN_ETL_AIRFLOW_RETRIES": "3",
        "LOGIN_ETL_AIRFLOW_ALERT_WEBHOOK": url,
    }

    done = _airflow(env, "dags", "test", DAG_ID)

    assert done.returncode != 0
    assert _tries(env) == [("failed", 1, 3)]  # three retries allowed, none taken
    assert len(received) == 1
    assert received[0]["dag_id"] == DAG_ID
    assert "exited 2" in received[0]["text"]


def test_runtime_failure_is_retried_then_alerts(
    airflow_env: dict[str, str], alerts: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = alerts
    # Nothing listens on the SQS endpoint: the worker gives up after 1 s and exits 1.
    dead = f"http://127.0.0.1:{free_port()}"
    env = {
        **airflow_env,
        **local_aws_env(dead),
        "LOGIN_ETL_QUEUE_URL": f"{dead}/000000000000/login-queue",
        "LOGIN_ETL_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "LOGIN_ETL_MASKING_KEY": generate_key(),
        "LOGIN_ETL_MAX_RETRY_TIME": "1",
        "LOGIN_ETL_AIRFLOW_RETRIES": "1",
        "LOGIN_ETL_AIRFLOW_ALERT_WEBHOOK": url,
    }

    done = _airflow(env, "dags", "test", DAG_ID)

    assert done.returncode != 0
    assert _tries(env) == [("failed", 2, 1)]  # the first try was retried once
    assert len(received) == 1  # alerts on the final failure, not on each retry
    assert "exited 1" in received[0]["text"]


def _boto_args(aws: dict[str, str]) -> dict[str, str]:
    return {
        "endpoint_url": aws["AWS_ENDPOINT_URL"],
        "region_name": aws["AWS_REGION"],
        "aws_access_key_id": aws["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"],
    }


def _visible(client: Any, queue_url: str) -> int:
    attrs = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )
