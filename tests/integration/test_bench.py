"""`make bench` keeps working (its numbers are reported, never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_runs_every_stage_and_reports_ratios() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "login_etl.dev.bench",
            "--events",
            "500",
            "--sqs-messages",
            "30",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert set(results) == {
        "transform",
        "pipeline",
        "postgres",
        "sqs",
        "drain_lake",
        "backfill",
    }
    for stage in results.values():
        assert stage["ours"] > 0 and stage["limit"] > 0
        assert abs(stage["ratio"] - stage["ours"] / stage["limit"]) < 1e-9
