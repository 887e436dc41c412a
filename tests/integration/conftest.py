"""Real services for integration tests: one PostgreSQL server and one moto SQS
endpoint per session; a fresh database and a fresh queue per test. Tests that
stop a server get one of their own (`own_pg`, `own_sqs`).

A service that fails to start fails the tests; nothing is skipped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import psycopg
import pytest
from psycopg import sql

from login_etl import redact
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
from login_etl.sqs import make_client

from .helpers import Env, Workers
from .querysqs import QuerySqs

_counter = itertools.count()


def unique_name(prefix: str) -> str:
    """A name no other test of any session on this machine uses."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}"


@pytest.fixture(autouse=True)
def _fresh_redact_registry() -> Iterator[None]:
    """Each test starts and ends with no registered secrets (`Settings.load` registers some)."""
    redact.forget_all()
    yield
    redact.forget_all()


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
    name = unique_name("login-queue")
    url: str = sqs_client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the query-only server may build its venv first: give them time for pip."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        asked = callspec is not None and "sqs-query" in callspec.params.values()  # test_contracts
        if asked or "query_sqs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def query_sqs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuerySqs]:
    """moto 4.1.8's server: SQS in the query protocol only (XML), as LocalStack before 3.0
    answers; from a venv of its own, built on first use (tests/integration/querysqs.py)."""
    with QuerySqs(tmp_path_factory.mktemp("moto-query")) as server:
        yield server


@pytest.fixture
def query_aws_env(query_sqs: QuerySqs, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AWS_* variables pointing boto3 at the query-only endpoint."""
    env = local_aws_env(query_sqs.endpoint)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def query_sqs_client(query_sqs: QuerySqs) -> Any:
    """Our SQS client (plain boto3 speaks only JSON) for arranging queues on it."""
    env = local_aws_env(query_sqs.endpoint)
    return make_client(
        env["AWS_ENDPOINT_URL"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def query_queue_url(query_sqs_client: Any) -> Iterator[str]:
    """A fresh, empty queue on the query-only endpoint."""
    name = unique_name("login-queue")
    attributes = {"VisibilityTimeout": "30"}
    url: str = query_sqs_client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    yield url
    query_sqs_client.delete_queue(QueueUrl=url)


@contextlib.contextmanager
def _fresh_database(pg_server: LocalPostgres) -> Iterator[str]:
    name = unique_name("test").replace("-", "_")
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.url_for(name)
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(pg_server: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database for one test."""
    with _fresh_database(pg_server) as url:
        yield url


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
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker subprocesses, all killed when the test ends."""
    pool = Workers(tmp_path)
    try:
        yield pool
    finally:
        pool.kill_all()


@pytest.fixture
def query_env(query_queue_url: str, query_sqs: QuerySqs, pg_server: LocalPostgres) -> Iterator[Env]:
    """A queue on the query-only endpoint, a fresh database of its own and a key.

    Not exported in this process: `etl_env` may be in the same test.
    """
    with _fresh_database(pg_server) as url:
        yield Env(query_queue_url, url, generate_key(), local_aws_env(query_sqs.endpoint))


# -- dedicated servers (ones a test may stop) ---------------------------------------


@pytest.fixture
def own_pg() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, free to stop and restart."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture
def own_pg_env(own_pg: LocalPostgres, queue_url: str, aws_env: dict[str, str]) -> Env:
    """A fresh queue on the session SQS, and a database on `own_pg`."""
    with psycopg.connect(own_pg.url, autocommit=True) as conn:
        # The server's default is synchronous_commit=off: the sink must still make
        # each batch durable before deleting its messages.
        conn.execute("CREATE DATABASE etl")
    return Env(queue_url, own_pg.url_for("etl"), generate_key(), aws_env)


@pytest.fixture
def own_sqs() -> Iterator[LocalSqs]:
    """A moto SQS server of this test's own, free to stop and restart (in this process)."""
    with LocalSqs() as server:
        yield server


@pytest.fixture
def own_sqs_env(own_sqs: LocalSqs, database_url: str) -> Iterator[tuple[Env, Any]]:
    """A queue on `own_sqs` and a fresh database; plus a client for that endpoint.

    moto keeps every server's queues in one in-process store, so the queue's
    name is unique: a test that fails cannot leave messages for the next one.
    """
    aws = local_aws_env(own_sqs.endpoint)
    client = boto3.client(
        "sqs",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        region_name=aws["AWS_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    url = client.create_queue(
        QueueName=unique_name("login-queue"), Attributes={"VisibilityTimeout": "10"}
    )["QueueUrl"]
    yield Env(url, database_url, generate_key(), aws), client
    with contextlib.suppress(botocore.exceptions.EndpointConnectionError):  # a test stopped it
        client.delete_queue(QueueUrl=url)


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
