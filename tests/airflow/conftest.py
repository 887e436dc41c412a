"""The Airflow tests need Apache Airflow in a venv of its own (`make test-airflow`
builds it from deploy/airflow/requirements.txt and points AIRFLOW_VENV at it).
Airflow's dependencies are not the project's, so a plain `pytest` run in the
project venv leaves these files alone unless that venv exists or AIRFLOW_VENV
names one; with AIRFLOW_VENV set, a missing Airflow fails the tests.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_VENV = Path(os.environ.get("AIRFLOW_VENV") or ROOT / ".venv-airflow").resolve()

if "AIRFLOW_VENV" not in os.environ and not (AIRFLOW_VENV / "bin" / "airflow").exists():
    collect_ignore_glob = ["test_*.py"]
