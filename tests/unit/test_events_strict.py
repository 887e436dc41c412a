"""Strict text: control characters, repeated fields, IP addresses, the size limit, and
JSON text written by hand (repeated and escaped keys, nesting, SNS envelopes, broken syntax)."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from login_etl.events import (
    MAX_BODY_BYTES,
    STORED,
    Invalid,
    LoginEvent,
    canonical_ip,
    parse_event,
)
from tests.unit.helpers import DROP, RECORD, record_body
from tests.unit.test_events import assert_well_formed

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def parse(body: str) -> LoginEvent | Invalid:
    """parse_event, its result checked against the contract on every body of this file."""
    result = parse_event(body, SENT)
    assert_well_formed(result)
    return result


def reason_of(body: str) -> str:
    result = parse(body)
    assert isinstance(result, Invalid), f"expected Invalid, got {result!r}"
    return result.reason


def members(*pairs: tuple[str, Any]) -> str:
    """A JSON object from (raw key text, value) pairs, repeats kept as written."""
    return "{" + ", ".join(f'"{key}": {json.dumps(value)}' for key, value in pairs) + "}"


def record_pairs(**changes: Any) -> list[tuple[str, Any]]:
    record = {**RECORD, **changes}
    return [(k, v) for k, v in record.items() if v is not DROP]


# -- control characters ---------------------------------------------------------

# One of each kind: NUL, other C0 (bell, backspace, tab, newline, vertical tab,
# form feed, carriage return, escape, unit separator), DEL, and C1 (padding,
# next line, CSI, APC).
CONTROLS = [
    "\x00", "\x01", "\x07", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1b", "\x1f",
    "\x7f", "\x80", "\x85", "\x9b", "\x9f",
]  # fmt: skip
INSIDE = {
    "user_id": ("user-", "-1"),
    "device_type": ("and", "roid"),
    "ip": ("10.0.0.1", "6.6.6.6"),
    "device_id": ("593-47", "-5928"),
    "app_version": ("2.3", ".0"),
    "locale": ("R", "U"),
}


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize("field", STORED)
@pytest.mark.parametrize("where", ["inside", "leading", "trailing"])
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw"])
def test_control_character_is_rejected(field: str, char: str, where: str, ascii_only: bool) -> None:
    head, tail = INSIDE[field]
    value = {"inside": head + char + tail, "leading": char + head + tail}.get(
        where, head + tail + char
    )
    # json always escapes C0; DEL and C1 go raw with ensure_ascii=False
    body = json.dumps({**RECORD, field: value}, ensure_ascii=ascii_only)
    assert reason_of(body) == f"control_character:{field}"


def test_nul_is_a_control_character() -> None:
    assert reason_of(record_body(device_id="a\x00b")) == "control_character:device_id"


def test_two_lines_in_an_ip_are_rejected() -> None:
    assert reason_of(record_body(ip="10.0.0.1\n6.6.6.6")) == "control_character:ip"


def test_escape_sequence_in_device_id_is_rejected() -> None:
    assert reason_of(record_body(device_id="\x1b]0;pwned\x07")) == "control_character:device_id"


@pytest.mark.parametrize("value", ["\t", "\n", " \r\n ", "\x1c", "\x85"])
def test_blank_of_control_whitespace_is_empty(value: str) -> None:
    assert reason_of(record_body(user_id=value)) == "empty_field:user_id"


@pytest.mark.parametrize(
    "text",
    ["é", "日本語", "😀", "a\u00a0b", "a\u200bb", "a\u2028b", "a\u00adb", "\ufeffx"],
    ids=["latin", "cjk", "emoji", "nbsp", "zwsp", "line-sep", "soft-hyphen", "bom"],
)
@pytest.mark.parametrize("field", ["user_id", "device_id"])
@pytest.mark.parametrize("ascii_only", [True, False], ids=["escaped", "raw"])
def test_other_unicode_is_kept(field: str, text: str, ascii_only: bool) -> None:
    # only C0 and C1 are refused: format characters and separators are data
    event = parse(json.dumps({**RECORD, field: text}, ensure_ascii=ascii_only))
    assert isinstance(event, LoginEvent)
    assert getattr(event, field) == text


# -- repeated fields --------------------------------------------------------------


def escaped(key: str) -> str:
    """`key` with its first letter spelled as a JSON escape (\\u0069p for ip)."""
    return f"\\u{ord(key[0]):04x}{key[1:]}"


@pytest.mark.parametrize("field", STORED)
@pytest.mark.parametrize("same", [False, True], ids=["different", "same"])
@pytest.mark.parametrize("spelling", ["plain", "escaped-first", "escaped-second", "both-escaped"])
def test_repeated_field_is_rejected(field: str, same: bool, spelling: str) -> None:
    first_key = escaped(field) if spelling in ("escaped-first", "both-escaped") else field
    second_key = escaped(field) if spelling in ("escaped-second", "both-escaped") else field
    second = RECORD[field] if same else "x" + RECORD[field]
    pairs = [(first_key, RECORD[field]), *record_pairs(**{field: DROP}), (second_key, second)]
    assert reason_of(members(*pairs)) == f"duplicate_field:{field}"


@pytest.mark.parametrize("field", STORED)
def test_repeated_field_with_null_is_rejected(field: str) -> None:
    pairs = [*record_pairs(), (field, None)]
    assert reason_of(members(*pairs)) == f"duplicate_field:{field}"


@pytest.mark.parametrize(
    ("parent", "child", "field"),
    [
        ("device", "id", "device_id"),
        ("device", "type", "device_type"),
        ("user", "id", "user_id"),
        ("app", "version", "app_version"),
    ],
)
@pytest.mark.parametrize("escape", [False, True])
def test_repeated_field_inside_nested_object_is_rejected(
    parent: str, child: str, field: str, escape: bool
) -> None:
    value = RECORD[field]
    inner = members((child, value), (escaped(child) if escape else child, value))
    body = members(*record_pairs(**{field: DROP}))[:-1] + f', "{parent}": {inner}}}'
    assert reason_of(body) == f"duplicate_field:{field}"


@pytest.mark.parametrize(
    "second", [{"id": "other"}, "a string", None, {}], ids=["object", "string", "null", "empty"]
)
def test_repeated_parent_of_a_stored_field_is_rejected(second: object) -> None:
    # a last-wins reader would see the second `device` only: no device_id or another one
    pairs = [*record_pairs(device_id=DROP), ("device", {"id": "593-47-5928"}), ("device", second)]
    assert reason_of(members(*pairs)) == "duplicate_field:device_id"


def test_repeats_of_other_keys_are_ignored() -> None:
    pairs = [("x", 1), *record_pairs(), ("x", 2), ("nested", {"ip": 1})]
    body = members(*pairs)[:-1] + ', "other": {"ip": "1.1.1.1", "ip": "2.2.2.2"}}'
    # `other_ip` is not a stored field, so its repeat is no one's concern
    assert parse(body) == parse(record_body())


@pytest.mark.parametrize(
    "body",
    [
        record_body(extra="x"),
        record_body(device={"x": 1}),  # a nested object that spells no stored field
        record_body(x="a" * 2000),
        json.dumps({**RECORD, "x": "a\x7fb"}, ensure_ascii=False),  # a raw DEL, not stored
    ],
    ids=["extra", "nested-other", "long-other", "control-in-other"],
)
def test_other_content_leaves_the_event_as_it_is(body: str) -> None:
    assert parse(body) == parse(record_body())


def test_flat_and_nested_spelling_is_still_a_conflict() -> None:
    body = members(*record_pairs(), ("device", {"id": "other"}))
    assert reason_of(body) == "conflicting_field:device_id"


def test_repeat_inside_sns_message_is_rejected() -> None:
    inner = members(*record_pairs(), ("ip", "2.2.2.2"))
    body = json.dumps({"Type": "Notification", "Message": inner})
    assert reason_of(body) == "duplicate_field:ip"


@pytest.mark.parametrize("key", ["Message", "Type"])
def test_repeated_envelope_key_is_rejected(key: str) -> None:
    value = record_body() if key == "Message" else "Notification"
    body = members(("Type", "Notification"), ("Message", record_body()), (key, value))
    assert reason_of(body) == "invalid_sns_message"


# -- IP addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("199.172.111.135", "199.172.111.135"),
        ("0.0.0.0", "0.0.0.0"),
        ("255.255.255.255", "255.255.255.255"),
        ("2001:DB8::1", "2001:db8::1"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("::1", "::1"),
        ("::", "::"),
        ("FE80::1", "fe80::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:102:304", "1.2.3.4"),
        ("0:0:0:0:0:ffff:0102:0304", "1.2.3.4"),
        ("0000:0000:0000:0000:0000:ffff:255.255.255.255", "255.255.255.255"),  # 45 chars
        ("::1.2.3.4", "::102:304"),  # IPv4-compatible (deprecated) is not mapped
        ("64:ff9b::1.2.3.4", "64:ff9b::102:304"),  # NAT64 stays IPv6
    ],
)
def test_ip_is_passed_on_in_canonical_form(text: str, canonical: str) -> None:
    assert canonical_ip(text) == canonical
    event = parse(record_body(ip=text))
    assert isinstance(event, LoginEvent)
    assert event.ip == canonical


@pytest.mark.parametrize(
    "text",
    [
        "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.256", "01.2.3.4", "1.2.3.04", "00.0.0.0",
        " 1.2.3.4", "1.2.3.4 ", "1.2.3.4/32", "1.2.3.4:80", "0x1.2.3.4", "+1.2.3.4",
        "1.2.3.-4", "١.٢.٣.٤", "1 .2.3.4", "localhost", "example.com", "x",
        "fe80::1%eth0", "fe80::1%1", "::g", "1:2:3:4:5:6:7:8:9", "12345::", ":::", "[::1]",
        "::ffff:1.2.3.04", "2001:db8::1/64", "1" * 46, "1" * 200,
        "0000:0000:0000:0000:0000:ffff:255.255.255.2555",
    ],
)  # fmt: skip
def test_invalid_ip_is_rejected(text: str) -> None:
    assert canonical_ip(text) is None
    assert reason_of(record_body(ip=text)) == "invalid_ip"


def reference_canonical(text: str) -> str | None:
    """What the ipaddress module says, zone ids refused."""
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@given(st.text(alphabet="0123456789abcdefABCDEF.:%x /", max_size=48) | st.text(max_size=12))
def test_canonical_ip_agrees_with_ipaddress(text: str) -> None:
    assert canonical_ip(text) == reference_canonical(text)


def spellings(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    texts = [str(address), address.exploded, address.exploded.upper()]
    if isinstance(address, ipaddress.IPv4Address):
        texts.append(f"::ffff:{address}")
        texts.append(f"::FFFF:{int(address) >> 16:x}:{int(address) & 0xFFFF:x}")
    return texts


@given(st.ip_addresses())
def test_every_spelling_of_an_address_gives_one_form(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    expected = reference_canonical(str(address))
    assert expected is not None
    for text in spellings(address):
        assert canonical_ip(text) == expected, text


# -- size ----------------------------------------------------------------------------


def padded(size: int, fill: str = " ") -> str:
    """A valid record padded with `fill` to exactly `size` bytes of UTF-8."""
    body = record_body()
    room = size - len(body.encode())
    unit = len(fill.encode())
    assert room % unit == 0
    return body[:-1] + fill * (room // unit) + "}"


def test_body_at_the_limit_loads() -> None:
    assert isinstance(parse(padded(MAX_BODY_BYTES)), LoginEvent)


def test_body_over_the_limit_is_refused() -> None:
    assert reason_of(padded(MAX_BODY_BYTES + 1)) == "too_large"


def test_limit_counts_utf8_bytes_not_characters() -> None:
    # U+3000 is JSON whitespace to no one, so put it in a string: 3 bytes each
    body = json.dumps({**RECORD, "x": "\u3000" * (MAX_BODY_BYTES // 3)}, ensure_ascii=False)
    assert len(body) < MAX_BODY_BYTES < len(body.encode())
    assert reason_of(body) == "too_large"


def test_huge_number_in_an_ignored_field_is_ignored() -> None:
    body = record_body()[:-1] + ', "x": ' + "9" * 100_000 + "}"
    assert parse(body) == parse(record_body())


@pytest.mark.parametrize("number", ["9" * 100_000, "1e999999", "-0.0", "NaN", "Infinity"])
@pytest.mark.parametrize("field", ["ip", "locale", "app_version"])
def test_number_in_a_stored_field_is_the_wrong_type(field: str, number: str) -> None:
    body = members(*record_pairs(**{field: DROP}))[:-1] + f', "{field}": {number}}}'
    assert reason_of(body) == f"wrong_type:{field}"


def test_huge_number_alone_is_not_an_object() -> None:
    assert reason_of("9" * 100_000) == "not_an_object"


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
def test_generated_json_text_ends_as_an_event_or_a_closed_reason(body: str) -> None:
    parse(body)


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
def test_escaping_does_not_change_the_result(record: dict[str, str | None]) -> None:
    # \u escapes and raw characters are two spellings of one text: one answer
    assert parse(json.dumps(record, ensure_ascii=True)) == parse(
        json.dumps(record, ensure_ascii=False)
    )
