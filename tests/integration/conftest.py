"""Real services for integration tests: one PostgreSQL server and one moto SQS
endpoint per session; a fresh database and a fresh queue per test.

A service that fails to start fails the tests; nothing is skipped.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import psycopg
import pytest
from psycopg import sql

from login_etl.config import Settings
from login_etl.dev.local import (
    LocalPostgres,
    LocalServices,
    LocalSqs,
    local_aws_env,
    local_services,
)
from login_etl.masking import generate_key
from login_etl.service import init_db

_counter = itertools.count()


@pytest.fixture(scope="session")
def services() -> Iterator[LocalServices]:
    """A throwaway PostgreSQL and moto's SQS over HTTP for the whole session, started as
    the demo and the benchmark start them."""
    with local_services() as running:
        yield running


@pytest.fixture(scope="session")
def pg_server(services: LocalServices) -> LocalPostgres:
    """The session's PostgreSQL server."""
    return services.pg


@pytest.fixture(scope="session")
def sqs_server(services: LocalServices) -> LocalSqs:
    """The session's SQS endpoint."""
    assert services.sqs is not None
    return services.sqs


@pytest.fixture
def aws_env(sqs_server: LocalSqs, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS_* variables pointing boto3 at the local endpoint."""
    env = local_aws_env(sqs_server.endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def sqs_client(aws_env: dict[str, str]) -> Any:
    """A plain boto3 SQS client for arranging and inspecting queues."""
    return boto3.client("sqs")


@pytest.fixture
def queue_url(sqs_client: Any) -> Iterator[str]:
    """A fresh, empty queue for one test."""
    name = f"login-queue-{os.getpid()}-{next(_counter)}"
    url: str = sqs_client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def database_url(pg_server: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


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


@pytest.fixture
def etl_env(
    queue_url: str, database_url: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Env:
    """A queue, a database and a key, also exported as LOGIN_ETL_* in this process."""
    env = Env(queue_url, database_url, generate_key(), aws_env)
    for k, v in env.vars().items():
        if k.startswith("LOGIN_ETL_"):
            monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def warehouse(request, tmp_path, aws_env) -> str:
    """A fresh warehouse: a local directory, or a bucket on moto's S3 over HTTP."""
    if request.param == "file":
        return f"file://{tmp_path}/warehouse"
    bucket = f"lake-{os.getpid()}-{time.monotonic_ns()}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/warehouse"


@pytest.fixture
def lake_env(etl_env, warehouse, monkeypatch):
    """etl_env with the lake on, exported as LOGIN_ETL_LAKE_WAREHOUSE too."""
    monkeypatch.setenv("LOGIN_ETL_LAKE_WAREHOUSE", warehouse)
    etl_env.warehouse = warehouse
    init_db(Settings.load())
    return etl_env
