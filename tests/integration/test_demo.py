"""`login-etl demo` end to end: a real subprocess on real local services.

Each run gets a private TMPDIR, so whatever appears in it, and any process
whose command line, working directory or environment mentions it, belongs to
that run and nothing else (other test sessions on the machine make their own
``login-etl-pg-*`` directories in /tmp). It lives under /tmp rather than
pytest's tmp_path because the server runs as ``nobody`` when we are root, and
pytest's base directory is not traversable by that user.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from login_etl.dev.seed import read_records, synthetic
from tests.oracle import outcome

_SUMMARY_LABELS = {
    "sent": "messages sent",
    "received": "received (SQS deliveries, repeats included)",
    "loaded": "loaded",
    "rejected": "rejected",
    "duplicates": "redeliveries skipped (duplicates)",
}


@pytest.fixture
def demo_tmp() -> Iterator[Path]:
    """A private, world-traversable TMPDIR for one demo run."""
    path = Path(tempfile.mkdtemp(prefix="login-etl-demo-test-"))
    path.chmod(0o755)
    yield path
    for pid in processes_using(path):  # only if a test failed: the demo's own server
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:  # a postmaster child that exited since it was listed
            pass
    shutil.rmtree(path, ignore_errors=True)


def demo_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a demo subprocess."""
    return dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1", **extra)


def run_demo(tmp: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run `login-etl demo ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "login_etl", "demo", *args],
        env=demo_env(tmp, **extra_env),
        capture_output=True,
        text=True,
        timeout=90,
    )


def processes_using(path: Path) -> list[int]:
    """Pids whose command line, working directory or environment mention `path`."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd").encode()
            seen = [(entry / "cmdline").read_bytes(), (entry / "environ").read_bytes(), cwd]
        except OSError:  # gone, or a kernel thread
            continue
        if any(needle in blob for blob in seen):
            found.append(int(entry.name))
    return found


def assert_nothing_left(tmp: Path) -> None:
    """No server directory and no process of the run remain."""
    leftovers = sorted(p.name for p in tmp.iterdir() if p.name.startswith("login-etl-pg-"))
    assert leftovers == []
    deadline = time.monotonic() + 5  # postmaster children may take a moment to exit
    while processes_using(tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(tmp) == []


def parse_summary(out: str) -> tuple[dict[str, int], dict[str, int]]:
    """The summary's counters and its rejections by reason."""
    numbers = {}
    for key, label in _SUMMARY_LABELS.items():
        match = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)\s*$", out, re.M)
        assert match, f"no {label!r} line in:\n{out}"
        numbers[key] = int(match.group(1).replace(",", ""))
    block = re.search(r"^\s*rejected\s+[\d,]+\s*$(.*?)^\s*redeliveries", out, re.M | re.S)
    assert block
    reasons = {
        m.group(1): int(m.group(2).replace(",", ""))
        for m in re.finditer(r"^\s+(\S+)\s+([\d,]+)\s*$", block.group(1), re.M)
    }
    return numbers, reasons


def _mentions(text: str, value: str) -> int:
    return len(re.findall(rf"(?<![\w.-]){re.escape(value)}(?![\w.-])", text))


def test_demo_synthetic_loads_everything_and_leaves_nothing(demo_tmp: Path) -> None:
    bodies = synthetic(300, 7)
    valid, reasons = outcome(bodies)
    assert reasons, "the generator should mix in malformed messages"
    # The demo must ignore the shell's own settings: these would point it elsewhere.
    done = run_demo(
        demo_tmp,
        "--synthetic",
        "300",
        "--random-seed",
        "7",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        LOGIN_ETL_QUEUE_URL="http://127.0.0.1:9/000000000000/elsewhere",
        LOGIN_ETL_DATABASE_URL="postgresql://nobody@127.0.0.1:9/elsewhere",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    numbers, by_reason = parse_summary(out)
    assert numbers["sent"] == 300
    assert numbers["loaded"] + numbers["rejected"] == 300
    assert numbers["loaded"] == len(valid)
    assert by_reason == dict(reasons)
    assert numbers["received"] >= 300
    assert "for this demo only" in out
    assert "SELECT 'device_id' AS field" in out  # the duplicates query is shown
    assert re.search(r"^[\d,]+ masked values appear in more than one login", out, re.M)

    # Exactly one plaintext PII value is printed: the unmasked IP, and it is a real one.
    unmasked = re.search(r"^\s*original\s+(\S+)\s*$", out, re.M)
    assert unmasked
    ips = {e.ip for e in valid}
    assert unmasked.group(1) in ips
    for ip in ips - {unmasked.group(1)}:
        assert _mentions(out, ip) == 0, "a plaintext IP was printed"
    for device_id in {e.device_id for e in valid}:
        assert _mentions(out, device_id) == 0, "a plaintext device id was printed"
    assert done.stderr == ""
    assert_nothing_left(demo_tmp)


def test_demo_with_the_sample_file(demo_tmp: Path, sample_path: Path) -> None:
    bodies = read_records(sample_path)
    valid, reasons = outcome(bodies)
    done = run_demo(demo_tmp, "--file", str(sample_path))
    assert done.returncode == 0, done.stdout + done.stderr
    numbers, by_reason = parse_summary(done.stdout)
    assert (numbers["sent"], numbers["loaded"], numbers["rejected"]) == (100, 99, 1)
    assert len(valid) == 99
    assert by_reason == dict(reasons)
    assert_nothing_left(demo_tmp)


def test_demo_bad_file_fails_before_starting_anything(demo_tmp: Path) -> None:
    bad = demo_tmp / "bad.json"
    bad.write_text("[not json")
    done = run_demo(demo_tmp, "--file", str(bad))
    assert done.returncode == 2
    assert done.stderr.startswith("login-etl: error:")
    bad.unlink()
    assert list(demo_tmp.iterdir()) == []


class Running:
    """A demo subprocess whose output is read as it comes.

    It starts with SIGINT ignored, as a background job of a non-interactive shell
    (and whatever that job starts, a test run included) does: Ctrl-C must stop the
    demo however it was started, so the tests do not depend on how pytest was.
    """

    def __init__(self, tmp: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            ["sh", "-c", 'trap "" INT; exec "$@"', "sh"]
            + [sys.executable, "-m", "login_etl", "demo", *args],
            env=demo_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.out = ""

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """Read output until `text` appears; return everything read so far."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while text not in self.out:
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {text!r}:\n{self.out}"
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"demo exited before printing {text!r}:\n{self.out}"
                self.out += chunk.decode()
        return self.out

    def interrupt(self) -> int:
        """Ctrl-C; return the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rest, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"demo still running 30 s after Ctrl-C:\n{self.out}{exc.output or b''!r}")
        self.out += rest.decode()
        return self.proc.returncode

    def kill(self) -> None:
        """Last resort, if a test failed mid-way; also closes the output pipe, which
        would otherwise be reported as an unclosed file in some later test."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _loaded_any(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM user_logins)").fetchone()
    return bool(row and row[0])


def test_ctrl_c_mid_run_cleans_up(demo_tmp: Path) -> None:
    # Mid-run by construction: the first row is in long before 100,000 messages are
    # (the feeder sends them gradually; making them costs ~2 s of CPU).
    demo = Running(demo_tmp, "--synthetic", "100000")
    try:
        out = demo.wait_for("Sending 100,000 messages")
        assert [p.name[:13] for p in demo_tmp.iterdir()] == ["login-etl-pg-"]
        url = re.search(r"^  PostgreSQL  (\S+)$", out, re.M)
        assert url, out
        deadline = time.monotonic() + 60
        while not _loaded_any(url[1]):  # mid-load: the first batch is in
            assert time.monotonic() < deadline, f"no row loaded in 60 s:\n{demo.out}"
            time.sleep(0.05)
        code = demo.interrupt()
    finally:
        demo.kill()
    assert code == 0, demo.out
    assert "interrupted" in demo.out
    # Stopped while loading: the summary that follows a finished load never came.
    assert "messages sent" not in demo.out, demo.out
    assert "Traceback" not in demo.out
    assert_nothing_left(demo_tmp)


def test_keep_leaves_services_usable_until_ctrl_c(demo_tmp: Path) -> None:
    demo = Running(demo_tmp, "--synthetic", "50", "--random-seed", "3", "--keep")
    try:
        out = demo.wait_for("Press Ctrl-C")
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in out.splitlines()
            if line.strip().startswith("export ")
        )
        env = {k: shlex.split(v)[0] for k, v in exports.items()}
        assert {
            "AWS_ENDPOINT_URL",
            "LOGIN_ETL_QUEUE_URL",
            "LOGIN_ETL_DATABASE_URL",
            "LOGIN_ETL_MASKING_KEY",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
        } <= env.keys()
        assert re.search(r"^\s*psql \S+", out, re.M)
        numbers, _ = parse_summary(out)
        with psycopg.connect(env["LOGIN_ETL_DATABASE_URL"]) as conn:
            row = conn.execute("SELECT count(*) FROM user_logins").fetchone()
        assert row is not None and row[0] == numbers["loaded"]

        status = subprocess.run(
            [sys.executable, "-m", "login_etl", "status", "--json"],
            env=dict(os.environ, **env),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["rows_loaded"] == numbers["loaded"]
        assert report["rejected"] == numbers["rejected"]
        assert report["queue"]["visible"] == 0
        assert processes_using(demo_tmp), "the kept server should still be running"
        code = demo.interrupt()
    finally:
        demo.kill()
    assert code == 0, demo.out
    assert_nothing_left(demo_tmp)


def test_keep_on_a_terminal_gives_a_shell_where_psql_and_unmask_work(demo_tmp: Path) -> None:
    """The documented `psql -Atc … | login-etl unmask` in the shell --keep starts."""
    import pty

    primary, secondary = pty.openpty()
    demo = subprocess.Popen(
        [sys.executable, "-m", "login_etl", "demo", "--synthetic", "30", "--keep"],
        env=demo_env(demo_tmp, SHELL="/bin/sh", PATH=os.environ["PATH"]),
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    os.close(secondary)
    try:
        command = (
            "psql -Atc 'SELECT masked_ip FROM user_logins ORDER BY 1 LIMIT 2' "
            "| login-etl unmask --field ip --purpose demo; exit\n"
        )
        os.write(primary, command.encode())  # read by the shell once it starts
        out, _ = demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()  # also closes the stdout pipe
        os.close(primary)
    text = out.decode()
    assert demo.returncode == 0, text
    assert "A shell (/bin/sh) with these set" in text
    assert "stopping the demo's services" in text
    after = text.split("Leave it (exit or Ctrl-D)", 1)[1]
    assert len([line for line in after.split() if _is_ip(line)]) == 2, after
    assert_nothing_left(demo_tmp)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return True
