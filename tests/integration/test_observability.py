"""Metrics and logs of a running worker: counters, reasons, and no PII."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

from login_etl.dev.local import free_port

from .helpers import event, send


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("login_etl_"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_endpoint_and_json_logs(etl_env, sqs_client) -> None:
    bodies = [event(i) for i in range(20)] + ["not json", json.dumps({"foo": "x"})]
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
            if (
                metrics.get("login_etl_loaded_total", 0)
                + metrics.get("login_etl_rejected_total", 0)
                >= 22
            ):
                break
            time.sleep(0.3)
        assert metrics["login_etl_loaded_total"] == 20
        assert metrics["login_etl_rejected_total"] == 2
        assert metrics['login_etl_rejected_by_reason_total{reason="invalid_json"}'] == 1
        assert metrics['login_etl_rejected_by_reason_total{reason="missing_field:user_id"}'] == 1
        assert metrics["login_etl_received_total"] == 22
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=40)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, stderr
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert {"worker started", "batch committed", "worker stopped"} <= {r["msg"] for r in lines}
    assert all(r["level"] in {"info", "warning"} for r in lines)
    assert sum(r.get("loaded", 0) for r in lines if r["msg"] == "batch committed") == 20
    for i in range(20):  # no plaintext ip in any log line
        assert f'"10.0.0.{i}"' not in stderr and f"10.0.0.{i} " not in stderr
    assert etl_env.key not in stderr
