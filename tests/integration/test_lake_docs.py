"""docs/lake.md's DuckDB examples, run as written against a real lake."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from login_etl.lake.table import sqlalchemy_url

from .helpers import LAKE_DAY as DAY
from .helpers import lake_event as event
from .helpers import lake_flush as flush
from .helpers import load_directly

DOC = Path(__file__).resolve().parents[2] / "docs" / "lake.md"


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_duckdb_examples_in_the_docs(lake_env, monkeypatch) -> None:
    events = []
    for n in range(3):  # three days; devices repeat across them
        # 25 devices: each logs in on more than one day.
        day = [event(i, device_id=f"{100 + i % 25}-00-0000") for i in range(n * 40, n * 40 + 40)]
        load_directly(
            lake_env,
            [json.dumps(e) for e in day],
            DAY + timedelta(days=n),
            n * 40,
            extra_fields=frozenset({"campaign"}),  # LOGIN_ETL_LAKE_EXTRA_FIELDS=campaign
        )
        events += [(e, (DAY + timedelta(days=n)).date()) for e in day]
    flush(lake_env)
    monkeypatch.setenv("LAKE_CATALOG_URI", sqlalchemy_url(lake_env.database_url))

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.S)
    assert len(blocks) == 4
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)
    finally:
        if "catalog" in namespace:
            namespace["catalog"].engine.dispose()

    versions = Counter(e["app_version"] for e, _ in events)
    expected = sorted(versions.items(), key=lambda kv: (-kv[1], kv[0]))
    assert namespace["versions"] == expected

    # Devices by their plaintext, independently: on how many days, how many logins.
    days, logins = {}, Counter()
    for e, d in events:
        days.setdefault(e["device_id"], set()).add(d)
        logins[e["device_id"]] += 1
    found = namespace["devices"]
    assert len(found) == 25  # the example finds the repeated devices, not an empty list
    assert sorted((n, c) for _, n, c in found) == sorted(
        (len(days[dev]), logins[dev]) for dev in days if len(days[dev]) > 1
    )
    assert all(mask.count(".") == 1 for mask, _, _ in found)  # masks, never plaintext

    assert namespace["campaigns"] == sorted(Counter(e["campaign"] for e, _ in events).items())
