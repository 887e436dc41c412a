"""Throwaway local services for the demo and the integration tests.

`LocalPostgres` runs a private PostgreSQL cluster (``initdb`` + ``pg_ctl``)
in a temporary directory; `LocalSqs` runs moto's SQS server over HTTP on
loopback; `local_services` starts both, with the schema, for the demo, the
benchmark and the tests. Both pick a free port, clean up after themselves (also on
Ctrl-C), and fail with `LocalServiceError` instead of being skipped.

PostgreSQL refuses to run as root: when we are root, the cluster runs as the
unprivileged user ``nobody`` and its directories are handed to that user.
Its server binaries are found by `login_etl.dev.pgbin`, which also makes
them reachable for ``nobody``.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from login_etl.config import Settings
from login_etl.dev.pgbin import find_pg_bindir, runnable_bindir
from login_etl.errors import LocalServiceError
from login_etl.service import init_db
from login_etl.sqs import make_client

_PG_SETTINGS = [
    # Throwaway data: durability off, speed on.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "listen_addresses=127.0.0.1",
    "max_connections=100",
]


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> dict[str, Any]:
    """subprocess kwargs that drop root to `nobody` (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("nobody")
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class Service:
    """start() / close(), usable as a context manager."""

    def start(self) -> Self:
        """Start the service."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the service and remove what it wrote."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalPostgres(Service):
    """A private PostgreSQL server on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self._as = _run_as()
        self.bindir = find_pg_bindir()
        if self._as:
            self.bindir = runnable_bindir(self.bindir, self._as)
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="login-etl-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if self._as:
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._as["user"], self._as["group"])

    @property
    def url(self) -> str:
        """libpq URI of the `postgres` database."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        """libpq URI of database `dbname` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / tool), *args]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, **self._as
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalServiceError(f"{tool} failed: {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise LocalServiceError(f"{tool} failed: {' / '.join(tail)}")

    def start(self) -> LocalPostgres:
        """initdb (first time) and start the server; wait until it accepts connections."""
        if not self.data.exists():
            self._pg(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
        opts = " ".join(f"-c {s}" for s in _PG_SETTINGS)
        opts += f" -p {self.port} -k {self.root}"
        self._pg("pg_ctl", "start", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` or ``immediate``); keep the data for a restart."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def close(self) -> None:
        """Stop the server and delete everything it wrote."""
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class LocalSqs(Service):
    """moto's server on a free loopback port (real HTTP): SQS, and KMS on the same port.

    Its SQS calls are made atomic first (`login_etl.dev.motosqs`): as moto ships,
    concurrent deletes can undo each other and concurrent receives share a message.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        """The endpoint URL, for AWS_ENDPOINT_URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalSqs:
        """Start the server and wait until it answers."""
        try:
            from moto.server import ThreadedMotoServer

            from login_etl.dev.motosqs import serialise
        except ImportError as exc:
            raise LocalServiceError(
                "the embedded SQS endpoint needs moto: pip install 'login-etl[local]'"
            ) from exc
        # werkzeug logs one line per request; keep the demo's and tests' output readable.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        serialise()  # concurrent deletes and receives must not interleave (see motosqs)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise LocalServiceError(f"moto SQS server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the server; moto keeps its queues in-process, so a restart finds them."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def close(self) -> None:
        """Stop the server."""
        self.stop()


def local_aws_env(endpoint: str) -> dict[str, str]:
    """Environment for talking to a local SQS endpoint with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }


@dataclass
class LocalServices:
    """A running PostgreSQL and SQS endpoint, and how to reach them."""

    pg: LocalPostgres
    sqs_endpoint: str
    sqs: LocalSqs | None = None

    @property
    def aws_env(self) -> dict[str, str]:
        """AWS_* variables for a subprocess that should use this endpoint."""
        return local_aws_env(self.sqs_endpoint)

    def sqs_client(self, *, pool_size: int = 10) -> Any:
        """A boto3 SQS client for this endpoint, whatever AWS_* the shell holds."""
        env = self.aws_env
        return make_client(
            self.sqs_endpoint,
            pool_size=pool_size,
            endpoint_url=self.sqs_endpoint,
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def settings(self, **overrides: Any) -> Settings:
        """Settings for this database and (given `queue_url`) queue, defaults otherwise."""
        return Settings(database_url=self.pg.url, **overrides)


@contextmanager
def local_services(*, sqs_endpoint: str | None = None) -> Iterator[LocalServices]:
    """Start a throwaway PostgreSQL (with the schema) and, unless an endpoint is
    given (LocalStack, say), moto's SQS; stop and delete both on exit."""
    with ExitStack() as stack:
        pg = LocalPostgres()
        stack.callback(pg.close)
        pg.start()
        sqs = None
        if sqs_endpoint is None:
            sqs = stack.enter_context(LocalSqs())
            sqs_endpoint = sqs.endpoint
        services = LocalServices(pg, sqs_endpoint, sqs)
        init_db(services.settings())
        yield services
