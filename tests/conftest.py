"""Shared test setup: a clean LOGIN_ETL_* environment for every test."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sample_data.json.gz"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `--dist loadgroup`, make sure every `xdist_group` test carries its `@group` suffix.

    pytest-xdist sends tests of one group to one worker by a `@group` suffix that it writes
    into `item._nodeid`; pytest 9 derives `nodeid` from `item._id` instead, so the suffix
    was lost and the "faults" tests ran side by side on both workers (pytest-xdist issue
    1386). Add it here; if even that does not take, stop the run rather than run the
    timing-sensitive tests in parallel unnoticed.
    """
    if not hasattr(config, "workerinput") or not config.getoption("loadgroup", False):
        return
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        if not names:
            continue
        suffix = "@" + "_".join(sorted(names))
        if item.nodeid.endswith(suffix):
            continue  # pytest-xdist's own hook did it (pytest < 9)
        if hasattr(item, "_id"):
            from _pytest.nodeid import coerce_node_id  # pytest >= 9 only

            item._id = coerce_node_id(item.nodeid + suffix)
        if not item.nodeid.endswith(suffix):
            message = (
                f"cannot put {item.nodeid} in its xdist group {suffix!r}: tests of that group "
                "would run in parallel; run with -n 0 or fix tests/conftest.py"
            )
            # A worker's UsageError reaches the terminal only as an INTERNALERROR that
            # names a test, not the reason; its stderr does reach it.
            sys.stderr.write(f"ERROR: {message}\n")
            raise pytest.UsageError(message)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own settings."""
    for name in list(os.environ):
        if name.startswith(("LOGIN_ETL_", "AWS_", "PG")) and name != "LOGIN_ETL_PG_BINDIR":
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI configures the root and login_etl loggers (on a runner's stderr); undo it."""
    loggers = [logging.getLogger("login_etl"), logging.getLogger()]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:], lg.level, lg.propagate = handlers, level, propagate
    logging.captureWarnings(False)


@pytest.fixture
def sample_path() -> Path:
    """The brief's 100 sample records (third-party data, read in place)."""
    if not SAMPLE.exists():
        pytest.skip("optional third-party sample file ../shared/data/sample_data.json.gz absent")
    return SAMPLE
