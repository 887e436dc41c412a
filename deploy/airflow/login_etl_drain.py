"""Airflow DAG: drain the login queue into PostgreSQL on a schedule.

Each run calls ``login-etl run --drain``, which exits once the queue has no
visible messages and everything it received is committed and deleted. The
exit code decides what Airflow does next:

* 0: done.
* 1: a runtime failure (an outage outlasted ``--max-retry-time``): retried with
  exponential backoff, since the messages are still queued and a later try
  picks them up.
* 2: a configuration error (bad key, missing queue URL): failed at once with
  ``AirflowFailException``, because retrying the same settings cannot help.

Any failure calls ``alert``, which logs one line and, when
``LOGIN_ETL_AIRFLOW_ALERT_WEBHOOK`` is set, POSTs a small JSON body to it
(Slack and most chat tools accept ``{"text": ...}``).

The worker's own settings (``LOGIN_ETL_QUEUE_URL``, ``LOGIN_ETL_DATABASE_URL_FILE``,
``LOGIN_ETL_MASKING_KEY_FILE``, AWS credentials) come from the Airflow worker's
environment; ``login-etl`` must be on its PATH (or set ``LOGIN_ETL_AIRFLOW_COMMAND``).
The DAG's own knobs, read when the file is parsed:

| variable | default | meaning |
|---|---|---|
| ``LOGIN_ETL_AIRFLOW_SCHEDULE`` | ``*/15 * * * *`` | cron schedule of the drain |
| ``LOGIN_ETL_AIRFLOW_COMMAND`` | ``login-etl run --drain`` | command to run |
| ``LOGIN_ETL_AIRFLOW_RETRIES`` | 3 | retries after an exit 1 |
| ``LOGIN_ETL_AIRFLOW_RETRY_DELAY`` | 60 | first retry delay, seconds (doubles each try) |
| ``LOGIN_ETL_AIRFLOW_ALERT_WEBHOOK`` | — | URL to POST failure alerts to |

Works with Airflow 3 (``airflow.sdk``) and Airflow 2.7+ (``airflow.decorators``).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import urllib.request
from datetime import timedelta
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import dag, task
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task
    from airflow.exceptions import AirflowFailException

log = logging.getLogger(__name__)

DAG_ID = "login_etl_drain"
EXIT_CONFIG_ERROR = 2

SCHEDULE = os.environ.get("LOGIN_ETL_AIRFLOW_SCHEDULE", "*/15 * * * *")
COMMAND = shlex.split(os.environ.get("LOGIN_ETL_AIRFLOW_COMMAND", "login-etl run --drain"))
RETRIES = int(os.environ.get("LOGIN_ETL_AIRFLOW_RETRIES", "3"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("LOGIN_ETL_AIRFLOW_RETRY_DELAY", "60")))


def alert(context: dict[str, Any]) -> None:
    """Report a failed try: one log line, and a webhook POST when configured."""
    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    text = (
        f"{DAG_ID}: task {getattr(ti, 'task_id', '?')} failed "
        f"(run {context.get('run_id', '?')}, try {getattr(ti, 'try_number', '?')}): {error}"
    )
    log.error(text)
    url = os.environ.get("LOGIN_ETL_AIRFLOW_ALERT_WEBHOOK")
    if not url:
        return
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text, "dag_id": DAG_ID}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (operator-set URL)
            pass
    except OSError as exc:
        # An alert that cannot be delivered must not hide the failure it reports.
        log.error("%s: alert webhook unreachable: %s", DAG_ID, exc)


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # One drain at a time: a second would only compete for the same messages.
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={"on_failure_callback": alert},
    tags=["login-etl"],
    doc_md=__doc__,
)
def login_etl_drain() -> None:
    """Drain the queue once per schedule tick."""

    @task(
        retries=RETRIES,
        retry_delay=RETRY_DELAY,
        retry_exponential_backoff=2.0,
        max_retry_delay=timedelta(minutes=30),
        execution_timeout=timedelta(hours=1),
    )
    def drain() -> None:
        """Run the drain; exit 2 fails without retry, any other failure retries."""
        log.info("running %s", shlex.join(COMMAND))
        with subprocess.Popen(
            COMMAND, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:  # login-etl never logs PII, so its lines are safe here
                log.info("%s", line.rstrip())
        code = proc.returncode
        if code == 0:
            return
        if code == EXIT_CONFIG_ERROR:
            raise AirflowFailException(
                "login-etl exited 2 (configuration error): fix the settings; retrying cannot help"
            )
        raise RuntimeError(f"login-etl exited {code} (runtime failure): will retry")

    drain()


login_etl_drain()
