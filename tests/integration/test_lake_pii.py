"""What a hostile producer can get into the lake: no address or device id, only strict JSON.

Real PostgreSQL, moto's SQS over HTTP, a warehouse on disk: the hostile
bodies go through the queue and the worker's own wiring with every one of
their field names allowed by LOGIN_ETL_LAKE_EXTRA_FIELDS, then the outbox,
the lake table, its files and a DuckDB read are searched for plaintext.
"""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from login_etl.config import Settings
from login_etl.pgsink import PostgresSink
from login_etl.service import build_pipeline
from login_etl.sqs import SqsSource

from .helpers import dump_text, lake_records, query, send, warehouse_bytes
from .helpers import lake_flush as flush

IP, DEVICE = "203.0.113.7", "dev-abc-123"
# Each hostile shape (as JSON text, so 1e999 stays what the producer wrote).
HOSTILE = [
    '"note": "login from 203.0.113.7 via proxy"',
    '"peer": "203.0.113.7:443"',
    '"IPaddr": "203.0.113.7:80"',
    '"x_forwarded_for": "203.0.113.7, 198.51.100.1"',
    '"referrer": "http://203.0.113.7/login"',
    '"net": "203.0.113.7/32"',
    '"hops": ["203.0.113.7:1"]',
    '"seen_203.0.113.7": 1, "seen_dev-ABC-123": true',
    '"hwid": "DEV-ABC-123"',
    '"hwnum": 3405803783',
    '"v6": "[2001:db8::1]:443"',
    '"v6_full": "2001:0DB8:0000:0000:0000:0000:0000:0001"',
    '"url6": "https://[2001:db8::2]/login"',
    '"mapped": "::ffff:198.51.100.2"',
    '"app_version": "203.0.113.7"',
    '"note": "\\ud800"',
    '"big": 1e999',
    '"nan": NaN',
]
NAMES = (
    "note,peer,IPaddr,x_forwarded_for,referrer,net,hops,seen_203.0.113.7,seen_dev-ABC-123,"
    "hwid,hwnum,v6,v6_full,url6,mapped,big,nan,campaign"
)
PLAINTEXT = ("203.0.113.7", "3405803783", "dev-abc-123", "2001:db8", "198.51.100")


def hostile_body(i: int, shape: str) -> str:
    base = {
        "user_id": f"hostile-{i}",
        "app_version": "2.3.0",
        "device_type": "android",
        "ip": IP,
        "locale": "RU",
        "device_id": DEVICE,
        "campaign": f"c{i}",
    }
    if shape.startswith('"app_version"'):
        del base["app_version"]
    return json.dumps(base)[:-1] + ", " + shape + "}"


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(name)

    doc = json.loads(text, parse_constant=refuse, parse_float=float)
    json.dumps(doc, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert all(math.isfinite(v) for v in doc.values() if isinstance(v, float))
    return doc


def assert_no_plaintext(text: str) -> None:
    lowered = text.lower()
    for plain in PLAINTEXT:
        assert plain not in lowered, plain


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_hostile_bodies_leave_no_plaintext_in_outbox_or_lake(
    lake_env, sqs_client, warehouse, monkeypatch
) -> None:
    monkeypatch.setenv("LOGIN_ETL_LAKE_EXTRA_FIELDS", NAMES)
    bodies = [hostile_body(i, shape) for i, shape in enumerate(HOSTILE)]
    send(sqs_client, lake_env.queue_url, bodies)
    settings = Settings.load()
    sink = PostgresSink(lake_env.database_url, lake=True)
    try:  # the worker's wiring, without its lake writer: the records stay in the outbox
        build_pipeline(
            settings, SqsSource(lake_env.queue_url), sink, settings.masker(), drain=True
        ).run()
    finally:
        sink.close()

    outbox = query(
        lake_env.database_url,
        "SELECT user_id, app_version_raw, extra FROM login_etl_lake_outbox ORDER BY 1",
    )
    assert len(outbox) == len(HOSTILE)  # every hostile body loaded
    assert_no_plaintext(dump_text(lake_env.database_url))
    for user_id, _, extra in outbox:
        i = int(user_id.split("-")[1])
        assert strict(extra)["campaign"] == f"c{i}"  # named fields are kept
    flush(lake_env)

    records = lake_records(lake_env)
    assert len(records) == len(HOSTILE)
    assert_no_plaintext(warehouse_bytes(warehouse).decode("utf-8", "replace"))
    assert_no_plaintext(json.dumps(records, default=str))
    extras = [r["extra"] for r in records]
    for extra in extras:
        strict(extra)
    # The docs' DuckDB recipe reads the whole column (a lone surrogate once failed it).
    events = pa.table({"extra": extras})  # noqa: F841 - DuckDB finds it by name
    found = duckdb.sql("SELECT json_extract_string(extra, '$.campaign') FROM events").fetchall()
    assert sorted(r[0] for r in found) == sorted(f"c{i}" for i in range(len(HOSTILE)))
    by_user = {r["user_id"]: (r["app_version_raw"], r["extra"]) for r in records}
    assert by_user["hostile-14"] == ("", '{"campaign":"c14"}')  # the version was the own ip
    assert by_user["hostile-0"] == ("2.3.0", '{"campaign":"c0"}')


# Spellings and splits that no single plain text shows (every name below allowed).
SPELLED = [
    '"note": "0xCB.0x00.0x71.0x07"',
    '"note": "203.0.28935"',
    '"note": "ip-203-0-113-7.ec2.internal"',
    '"note": "203%252E0%252E113%252E7"',
    '"note": "\\\\u0032\\\\u0030\\\\u0033\\\\u002e0\\\\u002e113\\\\u002e7"',
    '"note": "DEV_ABC_123"',
    '"note": ["dev-abc", "-123"]',
    '"hops": [203, 0, 113, 7]',
]
SPELLED_PLAINTEXT = ("0xcb", "28935", "203-0-113", "252e", "u0032", "dev_abc", "dev-abc", "113,7")


@pytest.mark.parametrize("warehouse", ["file"], indirect=True)
def test_encoded_and_split_values_do_not_reach_the_outbox(
    lake_env, sqs_client, warehouse, monkeypatch
) -> None:
    monkeypatch.setenv("LOGIN_ETL_LAKE_EXTRA_FIELDS", "note,hops")
    send(sqs_client, lake_env.queue_url, [hostile_body(i, s) for i, s in enumerate(SPELLED)])
    settings = Settings.load()
    sink = PostgresSink(lake_env.database_url, lake=True)
    try:
        build_pipeline(
            settings, SqsSource(lake_env.queue_url), sink, settings.masker(), drain=True
        ).run()
    finally:
        sink.close()

    outbox = query(lake_env.database_url, "SELECT extra FROM login_etl_lake_outbox")
    assert sorted(extra for (extra,) in outbox) == ["{}"] * len(SPELLED)
    dumped = dump_text(lake_env.database_url).lower()
    for plain in SPELLED_PLAINTEXT:
        assert plain not in dumped, plain
