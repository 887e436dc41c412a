"""A query-only SQS endpoint for the tests: moto 4.1.8's server over HTTP.

moto before 4.2 answers SQS only in the query protocol (XML), as LocalStack
before 3.0 (the brief's compose image) and ElasticMQ before 1.4 do. It needs
Flask and Werkzeug 2.2, so it runs from a venv of its own,
``.venv-sqs-query`` in the repository root, built on first use from
requirements/sqs-query.txt and built again when that file changes. A file
lock makes parallel test processes build it once. Failing to build or start
it fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import fcntl
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

from login_etl.dev.local import Service, free_port
from login_etl.errors import LocalServiceError

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements" / "sqs-query.txt"
VENV = ROOT / ".venv-sqs-query"


def _tail(text: str, lines: int = 5) -> str:
    return " / ".join(text.strip().splitlines()[-lines:])


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's ``moto_server``, after building the venv if it is missing or stale."""
    wanted = REQUIREMENTS.read_text("utf-8")
    stamp = venv / ".installed"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text("utf-8") != wanted:
            shutil.rmtree(venv, ignore_errors=True)
            steps = [
                [sys.executable, "-m", "venv", str(venv)],
                [
                    str(venv / "bin" / "pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                    str(REQUIREMENTS),
                ],
            ]
            for cmd in steps:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if done.returncode != 0:
                    raise LocalServiceError(
                        f"building {venv.name} failed: {_tail(done.stderr or done.stdout)}"
                    )
            stamp.write_text(wanted, "utf-8")
    return venv / "bin" / "moto_server"


class QuerySqs(Service):
    """moto 4.1.8's server on a free loopback port, in a process of its own."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = log_dir / "moto-query.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint URL, for AWS_ENDPOINT_URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Build the venv if needed, start the server, wait until it accepts connections."""
        server = ensure_venv()
        with open(self.log, "wb") as out:
            self._proc = subprocess.Popen(
                [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.log.read_text("utf-8", "replace")
                raise LocalServiceError(f"moto_server (query) exited: {_tail(log)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.close()
        raise LocalServiceError(f"moto_server (query) did not start on port {self.port}")

    def close(self) -> None:
        """Stop the server."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
