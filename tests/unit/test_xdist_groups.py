"""The suite's own conftest keeps each xdist group on one worker under `--dist loadgroup`.

A child pytest runs a small grouped module on two workers with tests/conftest.py
loaded as a plugin; each test writes down the worker that ran it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUPED = """
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("faults")


@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    Path(os.environ["GROUP_OUT"], str(i)).write_text(os.environ["PYTEST_XDIST_WORKER"])
"""
# Makes pytest's node id coercion drop the group suffix, as a pytest whose node
# ids no longer take it would.
LOSES_SUFFIX = """
import _pytest.nodeid

_coerce = _pytest.nodeid.coerce_node_id
_pytest.nodeid.coerce_node_id = lambda nodeid: _coerce(nodeid.rsplit("@", 1)[0])
"""


def _run_grouped(tmp_path: Path, *plugins: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    suite, out = tmp_path / "suite", tmp_path / "out"
    suite.mkdir()
    out.mkdir()
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "test_grouped.py").write_text(GROUPED)
    (suite / "loses_suffix.py").write_text(LOSES_SUFFIX)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(suite), env.get("PYTHONPATH", "")])
    env["GROUP_OUT"] = str(out)
    args = ["-n", "2", "--dist", "loadgroup", "-p", "tests.conftest", "-p", "no:cacheprovider"]
    for plugin in plugins:
        args += ["-p", plugin]
    child = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "-q", "test_grouped.py"],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    return child, out


def test_a_group_runs_on_one_worker(tmp_path: Path) -> None:
    child, out = _run_grouped(tmp_path)
    assert child.returncode == 0, child.stdout[-2000:] + child.stderr[-2000:]
    workers = {path.name: path.read_text() for path in out.iterdir()}
    assert sorted(workers) == [str(i) for i in range(6)]
    assert len(set(workers.values())) == 1, workers


def test_a_group_that_cannot_be_kept_together_stops_the_run_and_says_why(
    tmp_path: Path,
) -> None:
    child, out = _run_grouped(tmp_path, "loses_suffix")
    assert child.returncode != 0
    assert not list(out.iterdir())  # no test ran
    assert "in its xdist group '@faults': tests of that group would run in parallel" in (
        child.stderr
    )
