"""The fast ways through `parse_event` give exactly what the exact decoder gives.

`parse_event` takes msgspec's decode when it can prove the body has no
repeated stored key; `parse_event_exact` always keeps every key. Bodies are
written here as JSON text, so they can repeat keys, spell them with escapes,
nest, wrap in SNS envelopes and break the syntax.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from login_etl import events, fields
from login_etl.dev.seed import synthetic
from login_etl.events import STORED, parse_event, parse_event_exact
from tests.unit.helpers import RECORD, record_body

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def way(body: str) -> str:
    """Which way `parse_event` takes for `body` (reads the module's internals)."""
    if events._too_large(body):
        return "too-large"
    values = fields.decode_fast(body)
    if values is not None:
        if events._usual_event(values, body, SENT) is not None:
            return "usual"
        if fields.keys_once(body):
            return "fast"
    return "exact"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (record_body(), "usual"),
        (record_body(locale=None), "usual"),
        (json.dumps({k: v for k, v in RECORD.items() if k != "locale"}), "usual"),
        (record_body(extra="x"), "fast"),
        (record_body(ip="2001:DB8::1"), "fast"),
        (record_body(user_id=None), "fast"),
        (record_body(app_version="beta"), "fast"),
        (record_body(device_id="é"), "exact"),  # escaped as \\u00e9
        (json.dumps({**RECORD, "device_id": "é"}, ensure_ascii=False), "usual"),
        (record_body(device_id="a\x7fb"), "exact"),  # escaped: a backslash
        (json.dumps({**RECORD, "x": "a\x7fb"}, ensure_ascii=False), "fast"),
        (record_body()[:-1] + ', "ip": "1.1.1.1"}', "exact"),
        (record_body(device={"x": 1}), "exact"),
        (json.dumps({"Type": "Notification", "Message": record_body()}), "exact"),
        (record_body(x="a" * 2000), "exact"),
        ("not json", "exact"),
    ],
)
def test_each_way_is_taken_where_expected(
    body: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert way(body) == expected
    # ... and `parse_event` itself goes that way: watch which decoders it calls.
    called: list[str] = []
    exact, checked = events.exact_fields, events._checked_event

    def watch_exact(*args, **kwargs):  # type: ignore[no-untyped-def]
        called.append("exact")
        return exact(*args, **kwargs)

    def watch_checked(*args, **kwargs):  # type: ignore[no-untyped-def]
        called.append("checked")
        return checked(*args, **kwargs)

    monkeypatch.setattr(events, "exact_fields", watch_exact)
    monkeypatch.setattr(events, "_checked_event", watch_checked)
    result = parse_event(body, SENT)
    observed = "exact" if "exact" in called else "fast" if called else "usual"
    assert observed == expected, called
    monkeypatch.undo()
    assert result == parse_event_exact(body, SENT)
    assert result != events.Invalid("internal_error")


def test_synthetic_events_mostly_take_the_usual_way() -> None:
    ways = [way(b) for b in synthetic(2000, 7)]
    assert ways.count("usual") > 0.9 * len(ways)
    assert ways.count("exact") > 0  # the malformed ones


# -- generated JSON text ------------------------------------------------------------

MODES = st.sampled_from(["raw", "raw", "raw", "ascii", "escape-first"])


def json_string(text: str, mode: str) -> str:
    if mode == "escape-first" and text:
        return '"' + f"\\u{ord(text[0]):04x}" + json.dumps(text[1:])[1:]
    return json.dumps(text, ensure_ascii=mode == "ascii")


KEY_NAMES = st.sampled_from(
    [*STORED, "device", "user", "app", "id", "type", "version", "Type", "Message", "x", ""]
) | st.text(max_size=5)
TRICKY = st.sampled_from(
    [
        *RECORD.values(), "2001:DB8::1", "::ffff:1.2.3.4", "01.2.3.4", "fe80::1%eth0",
        "1.2.3.4 ", "0.96", " 3.1 ", "beta", "99999999999", "1" * 10, "", " ", "\t", "a\x00b",
        "a\x85b", "a\x7fb", "x\ud800", "a\u2028b", "Notification", "ip", '"ip"', "device",
        "a" * 32, "a" * 33, "a" * 128, "a" * 129, "é" * 33, "é" * 129,
    ]
)  # fmt: skip
TEXTS = TRICKY | st.text(max_size=12)
STRINGS = st.builds(json_string, TEXTS, MODES)
KEYS = st.builds(json_string, KEY_NAMES, MODES)
NUMBERS = st.sampled_from(["0", "-1", "1.5", "1e999", "9" * 40, "NaN", "-Infinity", "1E+2", "-0"])
SPACE = st.sampled_from(["", " ", "\n", "\t "])
LEAVES = STRINGS | NUMBERS | st.sampled_from(["null", "true", "false"])


def json_object(pairs: list[tuple[str, str]], space: str = "") -> str:
    return "{" + ",".join(f"{space}{k}{space}:{space}{v}" for k, v in pairs) + space + "}"


VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(st.tuples(KEYS, inner), max_size=4).map(json_object)
        | st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
    ),
    max_leaves=12,
)


@st.composite
def bodies(draw: st.DrawFn) -> str:
    """Mostly records: the sample's fields, some replaced, plus extra, repeated or nested keys."""
    pairs = []
    for name, value in RECORD.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # drop the field
        key = json_string(name, draw(MODES)) if draw(st.integers(0, 9)) == 0 else f'"{name}"'
        text = draw(STRINGS | VALUES) if draw(st.integers(0, 4)) == 0 else json.dumps(value)
        pairs.append((key, text))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        pairs.insert(draw(st.integers(0, len(pairs))), (draw(KEYS), draw(VALUES)))
    body = json_object(pairs, draw(SPACE))
    wrap = draw(st.integers(0, 9))
    if wrap == 0:
        body = json.dumps({"Type": "Notification", "Message": body})
    elif wrap == 1:  # break the syntax somewhere
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from(["", ",", "}", '"', "\\", "\x00"])) + body[at + 1 :]
    return body


@settings(max_examples=600, deadline=None)  # a 2-core machine under load
@given(bodies())
def test_fast_ways_agree_with_the_exact_decoder(body: str) -> None:
    event(way(body))
    result = parse_event(body, SENT)
    assert result == parse_event_exact(body, SENT)
    assert result != events.Invalid("internal_error")  # a bug on both sides is still a bug


@st.composite
def records(draw: st.DrawFn) -> dict[str, str | None]:
    """The stored fields only: the sample's values with one or two changed or dropped."""
    record: dict[str, str | None] = dict(RECORD)
    for name in draw(st.lists(st.sampled_from(STORED), min_size=1, max_size=2)):
        if draw(st.integers(0, 9)) == 0:
            record.pop(name, None)
        else:
            record[name] = draw(TRICKY | TEXTS | st.none())
    return record


@settings(max_examples=500, deadline=None)
@given(records())
def test_usual_way_agrees_on_every_field_value(record: dict[str, str | None]) -> None:
    for ascii_only in (True, False):
        body = json.dumps(record, ensure_ascii=ascii_only)
        event(way(body))
        result = parse_event(body, SENT)
        assert result == parse_event_exact(body, SENT)
        assert result != events.Invalid("internal_error")
