"""Liveness waits out a PostgreSQL outage, hung or down, at start or mid-run; readiness
reports it.

The hung server is stopped with SIGSTOP (postmaster and backends):
connections stay open and nothing answers, as with a hung host. That worker
is wired as `service.run` wires it, with a liveness slack of two seconds so
that the hang outlasts the probe window several times over in a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from login_etl.config import Settings
from login_etl.dev.local import LocalPostgres, free_port
from login_etl.metrics import Metrics, Stats
from login_etl.pgsink import PostgresSink
from login_etl.service import build_pipeline, init_db, serve_health, source_for
from login_etl.threads import Threads

from .helpers import event, scalar, send

SLACK = 2.0  # the liveness window under test: a thread stuck this long past its bound fails
HOLD = 5 * SLACK  # how long /readyz is held at 503, the server stopped


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as err:
        return err.code


def server_processes(pg: LocalPostgres) -> list[int]:
    """The postmaster and its children (each backend leads a process group of its own)."""
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def hung(pg: LocalPostgres) -> Iterator[None]:
    """The whole server stopped (SIGSTOP) inside the block, continued after it."""
    pids = server_processes(pg)
    for pid in pids:
        # A backend may end between being listed and being stopped: nothing to stop then.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.mark.timeout(180)
def test_a_hung_postgres_keeps_healthz_200_and_readyz_503(own_pg, own_pg_env, sqs_client) -> None:
    port = free_port()
    settings = Settings.load(
        env=own_pg_env.vars(
            LOGIN_ETL_MAX_RETRY_TIME="120",
            LOGIN_ETL_BATCH_SIZE="10",
            LOGIN_ETL_MAX_IN_FLIGHT="10",
            LOGIN_ETL_CONCURRENCY="2",
            LOGIN_ETL_METRICS_PORT=str(port),
        )
    )
    url = settings.database_url
    init_db(settings)
    stats = Stats(metrics=Metrics())
    source, info = source_for(settings)
    sink = PostgresSink(url, write_timeout=float(settings.max_retry_time))
    threads = Threads()  # the pipeline's and the probes', as `service.run` shares them
    pipeline = build_pipeline(
        settings,
        source,
        sink,
        settings.masker(),
        visibility_timeout=info.visibility_timeout,
        stats=stats,
        threads=threads,
    )
    server = serve_health(settings, stats, source, threads, slack=SLACK)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failed.append(exc)

    worker = threading.Thread(target=run, name="worker")
    worker.start()
    try:
        send(sqs_client, own_pg_env.queue_url, [event(i) for i in range(10)])
        wait_for(lambda: scalar(url, "SELECT count(*) FROM user_logins") == 10, "the first 10")
        wait_for(lambda: get(port, "/readyz") == 200, "/readyz 200")
        healthz: list[int] = []
        readyz: list[int] = []
        with hung(own_pg):
            send(sqs_client, own_pg_env.queue_url, [event(i) for i in range(10, 40)])
            # The writer is inside a write to the stopped server, and the receivers hold
            # as many messages as they may: nothing completes, nothing moves.
            wait_for(lambda: stats.in_hand == 10, "a full buffer behind a hung write")
            batches = stats.batches
            # Hold the hang until /readyz has said 503 for several liveness windows.
            down_since = None
            while down_since is None or time.monotonic() - down_since < HOLD:
                healthz.append(get(port, "/healthz"))
                readyz.append(get(port, "/readyz"))
                if readyz[-1] == 503 and down_since is None:
                    down_since = time.monotonic()
                time.sleep(0.1)
            assert stats.batches == batches  # no batch committed while hung
        assert set(healthz) == {200}, healthz
        first_down = readyz.index(503)
        assert set(readyz[first_down:]) == {503}, readyz  # down for the rest of the hang

        wait_for(lambda: scalar(url, "SELECT count(*) FROM user_logins") == 40, "all 40 loaded")
        wait_for(lambda: get(port, "/readyz") == 200, "/readyz 200 again")
        assert get(port, "/healthz") == 200
    finally:
        pipeline.stop()
        worker.join(60)
        server.shutdown()
        threads.join(30)
        sink.close()
    assert not failed, failed
    assert scalar(url, "SELECT count(DISTINCT user_id) FROM user_logins") == 40


def loaded(url: str) -> int:
    """Rows in user_logins; 0 before the worker has created it."""
    if not scalar(url, "SELECT to_regclass('user_logins') IS NOT NULL"):
        return 0
    return int(scalar(url, "SELECT count(*) FROM user_logins"))


def answer(port: int, path: str) -> tuple[int, str] | None:
    """(status, body) of one GET, or None while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return None


@pytest.mark.timeout(180)
def test_a_start_during_an_outage_answers_its_probes(own_pg, own_pg_env, sqs_client) -> None:
    own_pg.stop("fast")
    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "login_etl", "run", "--metrics-port", str(port)],
        env=own_pg_env.vars(LOGIN_ETL_MAX_RETRY_TIME="120"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Still starting (init-db waits for PostgreSQL), yet live; not ready.
        wait_for(lambda: answer(port, "/healthz") == (200, "ok\n"), "/healthz while starting")
        wait_for(
            lambda: answer(port, "/readyz") == (503, "postgresql down\nsqs ok\n"),
            "/readyz naming PostgreSQL",
        )
        assert answer(port, "/healthz") == (200, "ok\n")
        own_pg.start()
        send(sqs_client, own_pg_env.queue_url, [event(i) for i in range(5)])
        url = own_pg_env.database_url
        wait_for(lambda: loaded(url) == 5, "5 loaded")
        wait_for(lambda: answer(port, "/readyz") == (200, "postgresql ok\nsqs ok\n"), "ready")
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=40)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
    assert worker.returncode == 0, stderr
    assert "Traceback" not in stderr
