"""What the lake keeps beyond the stored fields: only named fields, scanned, strict JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from login_etl import extra, scan
from login_etl.cli import cli
from login_etl.config import Settings
from login_etl.errors import ConfigError
from login_etl.extra import DROP_REASONS, EMPTY, TOO_LARGE, extra_fields, keep
from login_etl.masking import Masker
from login_etl.source import Message
from login_etl.transform import Row, transform
from tests.unit.helpers import KEY_A

IP, DEVICE = "203.0.113.7", "dev-abc-123"
BASE = {
    "user_id": "u1",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": IP,
    "locale": "RU",
    "device_id": DEVICE,
}
# Every way the event's own values or an address were seen to reach the lake.
PLAINTEXT = (
    "203.0.113.7",
    "203.000.113.007",
    "3405803783",  # 203.0.113.7 as a 32-bit integer
    "2001:db8",
    "dev-abc-123",
    "198.51.100",
)

HOSTILE: list[dict[str, Any]] = [
    {"note": "login from 203.0.113.7 via proxy"},
    {"peer": "203.0.113.7:443"},
    {"IPaddr": "203.0.113.7:80"},
    {"x_forwarded_for": "203.0.113.7, 198.51.100.1"},
    {"referrer": "http://203.0.113.7/login"},
    {"net": "203.0.113.7/32"},
    {"hops": ["203.0.113.7:1"]},
    {"seen_203.0.113.7": 1, "seen_dev-ABC-123": True},
    {"hwid": "DEV-ABC-123"},
    {"hwnum": 3405803783},
    {"other_peer": "198.51.100.9"},
    {"v6": "[2001:db8::1]:443"},
    {"v6_full": "2001:0DB8:0000:0000:0000:0000:0000:0001"},
    {"v6_zone": "fe80::1%eth0"},
    {"mapped": "::ffff:198.51.100.2"},
    {"url6": "https://[2001:db8::2]/login"},
    {"zeros": "203.000.113.007"},
    {"wide": "\uff12\uff10\uff13\uff0e\uff10\uff0e\uff11\uff11\uff13\uff0e\uff17"},  # fullwidth
    {"encoded": "http%3A%2F%2F%5B2001%3Adb8%3A%3A3%5D%2F"},
    {"nested": [{"k": "203.0.113.7"}, {"DEV-abc-123": 1}, [["x 198.51.100.7"]]]},
]


def body(**fields: Any) -> str:
    return json.dumps({**BASE, **fields})


def flat_names(doc: dict[str, Any], prefix: str = "") -> set[str]:
    """The flattened names of `doc`'s leaves, as the lake names them."""
    names = set()
    for key, value in doc.items():
        if isinstance(value, dict):
            names |= flat_names(value, f"{prefix}{key}_")
        else:
            names.add(f"{prefix}{key}")
    return names


def strict(text: str) -> Any:
    """RFC 8259 JSON as a strict reader takes it: no NaN/Infinity, no lone surrogate."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    def finite(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {text}")
        return value

    doc = json.loads(text, parse_constant=refuse, parse_float=finite)
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return doc


def duckdb_reads(text: str) -> Any:
    """`text` read by DuckDB's JSON reader, as the docs' recipe reads `extra`, decoded again."""
    events = pa.table({"extra": [text]})  # noqa: F841 - DuckDB finds it by name
    found = duckdb.sql("SELECT json_extract(extra, '$') FROM events").fetchall()
    return json.loads(found[0][0])


def leaves(value: Any) -> list[str]:
    """Every key and string of a decoded JSON value."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (k, *leaves(v))]
    if isinstance(value, list):
        return [t for v in value for t in leaves(v)]
    return [value] if isinstance(value, str) else [json.dumps(value)]


# -- deny by default -----------------------------------------------------------------


@given(st.dictionaries(st.text(max_size=8), st.text() | st.integers() | st.none(), max_size=5))
def test_nothing_is_kept_unless_named(fields: dict[str, Any]) -> None:
    kept = keep(json.dumps({**fields, **BASE}), "2.3.0", frozenset(), ip=IP, device_id=DEVICE)
    assert kept.extra == EMPTY
    assert kept.app_version_raw == "2.3.0"


def test_only_named_fields_are_kept_flattened_and_sorted() -> None:
    doc = body(
        zeta=1,
        campaign="spring",
        geo={"city": "Riga", "client": {"ip": "10.0.0.9"}},
        alpha=[1, "two", None, {"b": False}],
        secret="not named",
    )
    allowed = frozenset({"zeta", "campaign", "geo_city", "alpha", "geo_client_ip", "ip"})
    text = extra_fields(doc, allowed, ip=IP, device_id=DEVICE)
    assert text == (
        '{"alpha":[1,"two",null,{"b":false}],"campaign":"spring","geo_city":"Riga","zeta":1}'
    )  # geo_client_ip names an address: the scan leaves its value out; `ip` is a column
    assert "not named" not in text


def test_a_name_names_a_leaf_not_an_object() -> None:
    doc = body(geo={"city": "Riga"})
    assert extra_fields(doc, frozenset({"geo"}), ip=IP, device_id=DEVICE) == EMPTY
    assert extra_fields(doc, frozenset({"geo_city"})) == '{"geo_city":"Riga"}'


# -- allowed values are still scanned -------------------------------------------------


@pytest.mark.parametrize("fields", HOSTILE, ids=lambda f: next(iter(f)))
def test_hostile_values_leave_no_plaintext_even_when_named(fields: dict[str, Any]) -> None:
    allowed = frozenset(flat_names(fields) | {"campaign"})
    kept = keep(body(**fields, campaign="c1"), "2.3.0", allowed, ip=IP, device_id=DEVICE)
    shown = strict(kept.extra)
    assert shown.pop("campaign") == "c1"  # the rest is kept
    for text in leaves(shown):
        assert scan.finding(text, scan.Own.of([IP], [DEVICE])) is None, kept
    for plain in PLAINTEXT:
        assert plain not in kept.extra.lower()
    assert kept.dropped and set(kept.dropped) <= set(DROP_REASONS)


@pytest.mark.parametrize(
    ("fields", "reasons"),
    [
        ({"note": "login from 198.51.100.4 via proxy"}, ["address"]),
        ({"note": "login from 203.0.113.7 via proxy"}, ["own_ip"]),
        ({"hwid": "DEV-ABC-123"}, ["own_device_id"]),
        ({"hops": ["ok", "203.0.113.7:1", "2001:db8::1"]}, ["own_ip", "address"]),
        ({"note": "\ud800"}, ["not_unicode"]),
        ({"big": 1e999, "nan": float("nan"), "wide": 2**64}, ["number", "number", "number"]),
    ],
)
def test_each_value_left_out_is_counted_by_reason(
    fields: dict[str, Any], reasons: list[str]
) -> None:
    kept = keep(body(**fields), "2.3.0", frozenset(fields), ip=IP, device_id=DEVICE)
    assert sorted(kept.dropped) == sorted(reasons)


# Spellings a hostile producer can put under a name the operator allowed (``note``).
ENCODED = [
    "0xCB.0x00.0x71.0x07",  # dotted hex: any address
    "0xcb.0.0x71.7",
    "0313.0.0161.07",  # dotted octal
    "198.051.0144.02",
    "198.0377.0377.2",
    "0xC6.0x33.0x64.0x02",
    "0xCB007107",  # the own ip as hex, dotted or not
    "cb:00:71:07",
    "203.0.28935",  # inet_aton's short forms of the own ip
    "203.28935",
    "031300070407",  # its 32-bit integer in octal
    "203000113007",  # its octets zero-padded, run together
    "203-0-113-7",  # other separators
    "ip-198-51-100-2.ec2.internal",
    "203 . 0 . 113 . 7",
    "203,0,113,7",
    "203\u30020\u3002113\u30027",  # ideographic full stops
    "198\u300251\u3002100\u30022",
    "\u0662\u0660\u0663.\u0660.\u0661\u0661\u0663.\u0667",  # Arabic-Indic digits
    "203.0\u0301.113.7",  # a combining mark
    "203%252E0%252E113%252E7",  # percent-encoded twice
    "203&#46;0&#46;113&#46;7",  # HTML entities
    "198&period;51&period;100&period;2",
    "".join(f"\\u{ord(c):04x}" for c in "198.51.100.2"),  # escapes written into the text
    "".join(f"\\x{ord(c):02x}" for c in "203.0.113.7"),
    json.dumps({"a": "198.51.100.2"}).replace("1", "\\u0031"),  # JSON inside, escaped
    "devabc123",  # the own device id without, or with other, separators
    "DEVABC123",
    "dev abc 123",
    "dev_abc_123",
    "dev\u2010abc\u2010123",
    "\uff44\uff45\uff56-abc-123",
]


@pytest.mark.parametrize("value", ENCODED)
def test_encoded_addresses_and_own_values_are_left_out(value: str) -> None:
    kept = keep(
        body(note=value, campaign="c1"),
        "2.3.0",
        frozenset({"note", "campaign"}),
        ip=IP,
        device_id=DEVICE,
    )
    assert kept.extra == '{"campaign":"c1"}'
    assert len(kept.dropped) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"note": ["dev-abc", "-123"]}, "own_device_id"),
        ({"note": ["203.0.11", "3.7"]}, "own_ip"),
        ({"hops": [203, 0, 113, 7]}, "own_ip"),
        ({"meta": [{"dev-abc": "-123"}]}, "own_device_id"),
        ({"meta": [{"203.0.": "113.7"}]}, "own_ip"),
        ({"a": "dev-abc", "b": "-123"}, "own_device_id"),  # in the order the lake stores them
    ],
)
def test_values_split_over_pieces_are_left_out(fields: dict[str, Any], reason: str) -> None:
    kept = keep(body(**fields), "2.3.0", frozenset(fields), ip=IP, device_id=DEVICE)
    assert kept.extra == EMPTY
    assert kept.dropped == (reason,)


def test_a_number_is_searched_as_written() -> None:
    kept = keep('{"serial": 7e3}', "2.3.0", frozenset({"serial"}), ip=IP, device_id="7e3")
    assert kept == (EMPTY, "2.3.0", ("own_device_id",))


def test_a_value_split_with_the_version_is_left_out() -> None:
    kept = keep(body(note=".113.7"), "203.0", frozenset({"note"}), ip=IP, device_id=DEVICE)
    assert (kept.extra, kept.app_version_raw) == (EMPTY, "203.0")


@pytest.mark.parametrize(
    "fields",
    [
        {"note": "spring sale 2.3.4", "hops": ["edge-1", "edge-2"]},
        {"note": "424cdd21-063a-43a7-b91b-7ca1a833afae", "ts": 1733331600},
        {"note": "2026-12-04T17:01:12Z", "n": [1, 2, 3]},
        {"note": "dev-abc-12"},
        {"note": "1.5 stars"},  # after the version 2.3.0: 2.3.01.5 is not sought
    ],
)
def test_ordinary_values_are_kept(fields: dict[str, Any]) -> None:
    kept = keep(body(**fields), "2.3.0", frozenset(fields), ip=IP, device_id=DEVICE)
    assert json.loads(kept.extra) == fields and kept.dropped == ()


def test_only_the_offending_array_element_goes() -> None:
    doc = body(hops=["edge-1", "203.0.113.7:1", {"n": 2, "via": "198.51.100.1"}])
    text = extra_fields(doc, frozenset({"hops"}), ip=IP, device_id=DEVICE)
    assert text == '{"hops":["edge-1",{"n":2}]}'


def test_the_own_device_id_as_a_number_is_found() -> None:
    kept = keep(
        body(serial=5934759281.0), "2.3.0", frozenset({"serial"}), ip=IP, device_id="5934759281"
    )
    assert kept.extra == EMPTY and kept.dropped == ("own_device_id",)


@pytest.mark.parametrize(
    ("version", "kept_as"),
    [
        ("2.3.0", "2.3.0"),
        ("0.96.12", "0.96.12"),
        ("203.0.113.7", ""),  # both a version and the event's own address
        ("198.51.100.1", ""),  # any address
        ("1.0.0.1.7", ""),  # holds one
        ("5934759281", ""),  # the event's own device id
    ],
)
def test_app_version_raw_is_not_kept_when_it_is_an_address_or_an_own_value(
    version: str, kept_as: str
) -> None:
    kept = keep(body(app_version=version), version, frozenset(), ip=IP, device_id="5934759281")
    assert kept.app_version_raw == kept_as
    assert kept.dropped == (() if kept_as else (kept.dropped[0],))


# -- strict JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '"note": "\\ud800"',
        '"note": "caf\\u00e9 \\udfff x"',
        '"\\ud800key": 1',
        '"note": ["ok", "\\ud800"]',
        '"n": 1e999',
        '"n": -1e999',
        '"n": NaN',
        '"n": Infinity',
        '"n": -Infinity',
        '"n": 123456789012345678901234567890',
    ],
)
def test_what_no_strict_reader_takes_is_left_out(raw: str) -> None:
    doc = '{"user_id": "u1", "keep": "é 😀 \\u0000", ' + raw + "}"
    allowed = frozenset({"note", "n", "\ud800key", "keep"})
    text = extra_fields(doc, allowed, ip=IP, device_id=DEVICE)
    assert text.isascii()
    assert strict(text) == {"keep": "é 😀 \x00"} or strict(text) == {
        "keep": "é 😀 \x00",
        "note": ["ok"],
    }
    assert duckdb_reads(text) == json.loads(text)


@settings(max_examples=60)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text()
        | st.sampled_from(
            ["203.0.113.7", "DEV-ABC-123", "x 2001:db8::9 y", "\ud800", "1.2.3.4:5", "2.3.0"]
        ),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=6) | st.sampled_from(["seen_dev-abc-123"]), inner)
        ),
        max_leaves=10,
    )
)
def test_generated_fields_give_strict_json_free_of_addresses(value: Any) -> None:
    fields = {"f": value, "g": {"h": value}}
    kept = keep(body(**fields), "2.3.0", frozenset({"f", "g_h"}), ip=IP, device_id=DEVICE)
    shown = strict(kept.extra)  # never NaN, Infinity or a lone surrogate
    own = scan.Own.of([IP], [DEVICE])
    assert all(scan.finding(t, own) is None for t in leaves(shown))
    assert set(kept.dropped) <= set(DROP_REASONS)
    assert duckdb_reads(kept.extra) == shown


# -- bounds ---------------------------------------------------------------------------


def test_cost_stays_proportional_to_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A very long parent key over many children once built a name per child."""
    built: list[int] = []  # characters of the flattened names each level would build
    flatten = extra._Keeper.flatten

    def counting(self: Any, obj: dict[str, Any], prefix: str, *rest: Any) -> None:
        built.append(len(prefix) * len(obj))
        flatten(self, obj, prefix, *rest)

    monkeypatch.setattr(extra._Keeper, "flatten", counting)
    doc = json.dumps({**BASE, "k" * 200_000: {str(i): i for i in range(5_000)}})
    text = extra_fields(doc, frozenset({"k" * 200 + "_1", "x"}))
    assert sum(built) <= len(doc)  # a name per child would be 5,000 × 200,000 characters
    assert text == EMPTY  # names longer than MAX_NAME are left out
    wide = json.dumps({**BASE, "wide": [f"f{i}" + "x" * 20 for i in range(5_000)]})
    assert keep(wide, "1", frozenset({"wide"}), ip=IP, device_id=DEVICE) == (
        TOO_LARGE,
        "1",
        ("too_large",),
    )


def test_nested_names_and_sns_envelope() -> None:
    inner = {**BASE, "device": {"model": "x1"}, "campaign": "c1"}
    del inner["device_id"]
    inner["device"]["id"] = DEVICE
    envelope = {"Type": "Notification", "Message": json.dumps(inner), "MessageId": "n"}
    allowed = frozenset({"device_model", "device_id", "campaign"})
    text = extra_fields(json.dumps(envelope), allowed, ip=IP, device_id=DEVICE)
    assert json.loads(text) == {"device_model": "x1", "campaign": "c1"}


# -- transform ------------------------------------------------------------------------


def test_transform_fills_lake_fields_only_when_asked() -> None:
    doc = body(campaign="spring", app_version="203.0.113.7", note="via 198.51.100.1")
    message = Message("m1", "r", doc, time_of_send())
    masker = Masker(KEY_A)
    plain = transform(message, masker)
    lake = transform(message, masker, lake=True, extra_fields=frozenset({"campaign", "note"}))
    assert isinstance(plain, Row) and isinstance(lake, Row)
    assert (plain.extra, plain.lake_dropped) == ("{}", ())
    assert lake.extra == '{"campaign":"spring"}'
    assert lake.app_version_raw == "" and lake.app_version == plain.app_version == 203
    assert sorted(lake.lake_dropped) == ["address", "own_ip"]


def time_of_send() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 1, 2, tzinfo=UTC)


# -- scan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("2.3.0", None),
        ("version 10.2", None),
        ("12:30:45", None),
        ("00:1a:2b:3c:4d:5e", None),
        ("dev-abc-12", None),
        ("1.2.3.4", "address"),
        ("a1.2.3.4b", "address"),
        ("999.1.2.3.4", "address"),
        ("203.000.113.007", "own_ip"),  # the own ip with leading zeros
        ("::1", "address"),
        ("1:2:3:4:5:6:7:8", "address"),
        ("x203.0.113.7", "own_ip"),
        ("ip 3405803783", "own_ip"),
        ("2001:DB8::1", "address"),
        ("seen_DEV-ABC-123", "own_device_id"),
        ("%32%30%33%2E0%2E113%2E7", "own_ip"),
    ],
)
def test_scan_finding(text: str, why: str | None) -> None:
    assert scan.finding(text, scan.Own.of([IP], [DEVICE])) == why


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("from 198.51.100.99:443", "from [address]:443"),
        ("seen_SECRETDEV-9", "seen_[device_id]"),
        ("see [2001:db8::1]:443 now", "see [[address]]:443 now"),
        ("n=3405803783", "n=[ip]"),
        ("plain", "plain"),
        ("\uff11\uff19\uff18.51.100.99", "[hidden]"),
    ],
)
def test_scan_redact(text: str, shown: str) -> None:
    own = scan.Own.of([IP], ["secretdev-9"])
    assert scan.redact(text, own) == shown


# -- the setting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("campaign", ("campaign",)),
        (" geo_city , campaign,campaign ", ("campaign", "geo_city")),
        ("x-forwarded.for", ("x-forwarded.for",)),
    ],
)
def test_extra_fields_setting(value: str, names: tuple[str, ...]) -> None:
    assert Settings.load(env={"LOGIN_ETL_LAKE_EXTRA_FIELDS": value}).lake_extra_fields == names
    assert Settings.load(env={}).lake_extra_fields == ()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a,,b", "'' is not a field name"),
        ("a,", "'' is not a field name"),
        ("geo city", "'geo city' is not a field name"),
        ("a;b", "'a;b' is not a field name"),
        ("x" * 257, "is not a field name"),
        ("campaign,device_id", "'device_id' is a column of its own"),
    ],
)
def test_extra_fields_setting_refuses_what_is_not_a_name(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        Settings.load(env={"LOGIN_ETL_LAKE_EXTRA_FIELDS": value})
    assert str(info.value).startswith("LOGIN_ETL_LAKE_EXTRA_FIELDS: ")


def test_a_bad_extra_fields_flag_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(cli, ["rejects", "replay", "--lake-extra-fields", "a,,b"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0, result.output
    assert "--lake-extra-fields" in result.output
    help_text = CliRunner().invoke(cli, ["run", "--help"]).output
    assert "LOGIN_ETL_LAKE_EXTRA_FIELDS" in " ".join(help_text.split())


# -- counted in the metrics -------------------------------------------------------------


def test_values_left_out_are_counted_by_reason_in_the_metrics() -> None:
    from login_etl.metrics import Metrics, Stats
    from login_etl.pipeline import Options, Pipeline
    from login_etl.sink import MemorySink
    from login_etl.source import MemorySource

    bodies = [
        body(note="from 198.51.100.1", campaign="c1"),
        body(note="DEV-ABC-123 again", campaign="c2"),
        body(note="fine", campaign="c3", app_version="203.0.113.7"),
    ]
    stats = Stats(metrics=Metrics())
    options = Options(
        concurrency=1,
        batch_wait_seconds=0.05,
        wait_time=0,
        drain=True,
        heartbeat=False,
        lake=True,
        lake_extra_fields=frozenset({"note", "campaign"}),
    )
    sink = MemorySink()
    Pipeline(MemorySource(bodies), sink, Masker(KEY_A), options, stats=stats).run()
    assert sorted(r.extra for r in sink.rows) == [
        '{"campaign":"c1"}',
        '{"campaign":"c2"}',
        '{"campaign":"c3","note":"fine"}',
    ]
    registry = stats.metrics.registry if stats.metrics else None
    assert registry is not None
    counted = {
        reason: registry.get_sample_value("login_etl_lake_values_dropped_total", {"reason": reason})
        for reason in DROP_REASONS
    }
    assert counted == {
        "address": 1.0,
        "own_device_id": 1.0,
        "own_ip": 1.0,  # the app version that is the event's own address
        "not_unicode": 0.0,
        "number": 0.0,
        "too_large": 0.0,
    }
