"""transform: one message to one masked Row or one sealed Rejection."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.pretty import pretty_repr

from login_etl.masking import MASK_MAX_CHARS, Masker
from login_etl.source import Message
from login_etl.transform import Rejection, Row, open_body, reject, seal_body, transform
from tests.unit.helpers import CONTROL, KEY_A, REASON, RECORD, record_body

SENT = datetime(2024, 5, 1, 23, 59, tzinfo=UTC)


def message(body: str, message_id: str = "m-1", receive_count: int = 1) -> Message:
    return Message(message_id, "receipt-1", body, SENT, receive_count)


def test_valid_message_becomes_masked_row(masker: Masker) -> None:
    row = transform(message(record_body(), "m-42"), masker)
    assert isinstance(row, Row)
    assert row.message_id == "m-42"
    assert row.user_id == RECORD["user_id"]
    assert row.device_type == "android"
    assert row.locale == "RU"
    assert row.app_version == 2
    assert row.create_date == date(2024, 5, 1)
    assert row.sent_at == SENT
    assert masker.unmask("ip", row.masked_ip) == RECORD["ip"]
    assert masker.unmask("device_id", row.masked_device_id) == RECORD["device_id"]
    assert row.masked_ip == masker.mask("ip", RECORD["ip"])
    # no plaintext PII anywhere in the row
    text = repr(row)
    assert RECORD["ip"] not in text and RECORD["device_id"] not in text


def test_same_ip_in_two_messages_masks_equal(masker: Masker) -> None:
    a = transform(message(record_body(user_id="a"), "m-1"), masker)
    b = transform(message(record_body(user_id="b", device_id="other"), "m-2"), masker)
    assert isinstance(a, Row) and isinstance(b, Row)
    assert a.masked_ip == b.masked_ip
    assert a.masked_device_id != b.masked_device_id


def test_null_locale_row(masker: Masker) -> None:
    row = transform(message(record_body(locale=None)), masker)
    assert isinstance(row, Row)
    assert row.locale is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"foo": "oops_wrong_msg_type", "bar": "123"}', "missing_field:user_id"),
        ("not json", "invalid_json"),
        ("", "invalid_json"),
        ("[1]", "not_an_object"),
        (record_body(app_version="beta"), "invalid_app_version"),
        (record_body(user_id="u" * 129), "too_long:user_id"),
        (record_body(ip="a\ud800"), "invalid_unicode:ip"),
        (record_body(ip="10.0.0.1\n6.6.6.6"), "control_character:ip"),
        (record_body(device_id="\x1b[2J"), "control_character:device_id"),
        (record_body(ip="10.0.0.300"), "invalid_ip"),
        (record_body()[:-1] + ', "ip": "6.6.6.6"}', "duplicate_field:ip"),
        (record_body(x="x" * 300_000), "too_large"),
    ],
)
def test_invalid_message_becomes_sealed_rejection(masker: Masker, body: str, reason: str) -> None:
    rejection = transform(message(body, "m-7", receive_count=3), masker)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == reason
    assert rejection.message_id == "m-7"
    assert rejection.receive_count == 3
    assert rejection.sent_at == SENT
    assert open_body(masker, rejection.sealed_body, rejection.message_id) == body
    assert rejection.sealed_body.startswith(masker.key_id + ".")
    if len(body) > 8:
        assert body not in rejection.sealed_body


def test_body_with_raw_lone_surrogate_round_trips(masker: Masker) -> None:
    # not a JSON escape: the decoded string itself carries the surrogate
    body = '{"user_id": "\ud800"'
    rejection = transform(message(body), masker)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "invalid_json"
    assert open_body(masker, rejection.sealed_body, rejection.message_id) == body


@given(st.text())
def test_seal_body_round_trip_any_text(body: str) -> None:
    masker = Masker(KEY_A)
    assert open_body(masker, seal_body(masker, body, "m-1"), "m-1") == body


@given(st.text())
def test_transform_never_raises(body: str) -> None:
    masker = Masker(KEY_A)
    out = transform(message(body), masker)
    assert isinstance(out, Row | Rejection)
    if isinstance(out, Rejection):
        assert open_body(masker, out.sealed_body, out.message_id) == body


def _longest_ok_value() -> int:
    masker = Masker(KEY_A)
    n = 1
    while len(masker.mask("device_id", "1" * (n + 1))) <= MASK_MAX_CHARS:
        n += 1
    return n


def test_mask_too_long(masker: Masker) -> None:
    # Only device_id can get here: an ip is at most 45 characters, or it is invalid_ip.
    limit = _longest_ok_value()
    ok = transform(message(record_body(device_id="1" * limit)), masker)
    assert isinstance(ok, Row)
    assert len(ok.masked_device_id) <= MASK_MAX_CHARS
    too_long = transform(message(record_body(device_id="1" * (limit + 1))), masker)
    assert isinstance(too_long, Rejection)
    assert too_long.reason == "mask_too_long:device_id"
    assert json.loads(open_body(masker, too_long.sealed_body, too_long.message_id))[
        "device_id"
    ] == "1" * (limit + 1)


def test_two_hundred_char_ip_is_rejected(masker: Masker) -> None:
    out = transform(message(record_body(ip="1" * 200)), masker)
    assert isinstance(out, Rejection)
    assert out.reason == "invalid_ip"


def test_longest_ip_text_masks_within_the_column(masker: Masker) -> None:
    out = transform(message(record_body(ip="1111:2222:3333:4444:5555:6666:7777:8888")), masker)
    assert isinstance(out, Row)
    assert len(out.masked_ip) <= MASK_MAX_CHARS


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["2001:db8::1", "2001:DB8::1", "2001:0db8:0:0:0:0:0:1"], "2001:db8::1"),
        (["1.2.3.4", "::ffff:1.2.3.4", "::FFFF:102:304"], "1.2.3.4"),
    ],
)
def test_one_address_one_mask(masker: Masker, spellings: list[str], canonical: str) -> None:
    rows = [transform(message(record_body(ip=text)), masker) for text in spellings]
    assert all(isinstance(r, Row) for r in rows)
    masks = {r.masked_ip for r in rows if isinstance(r, Row)}
    assert len(masks) == 1
    assert masker.unmask("ip", masks.pop()) == canonical  # unmask gives the canonical form


def test_reject_builds_rejection(masker: Masker) -> None:
    msg = message(record_body(), "m-9", receive_count=2)
    rejection = reject(msg, "db_error:whatever", masker)
    assert (rejection.message_id, rejection.reason, rejection.receive_count) == (
        "m-9",
        "db_error:whatever",
        2,
    )
    assert open_body(masker, rejection.sealed_body, rejection.message_id) == msg.body


def test_message_repr_hides_body() -> None:
    msg = message(record_body(), "m-5")
    # rich (a dependency: the CLI's tables, the demo's log handler) pretty-prints
    # through __rich_repr__, which a msgspec struct defines with every field.
    text = repr(msg) + str(msg) + pretty_repr([msg]) + pretty_repr({"held": (msg, 1.0)})
    assert "m-5" in text
    for secret in (RECORD["ip"], RECORD["device_id"], RECORD["user_id"]):
        assert secret not in text


def test_rejection_holds_no_plaintext(masker: Masker) -> None:
    out = transform(message(record_body(app_version="beta")), masker)
    assert isinstance(out, Rejection)
    text = repr(out)
    assert RECORD["ip"] not in text and RECORD["device_id"] not in text


# Text with lone surrogates, NULs and control characters, sometimes huge.
hostile_text = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x20), max_size=10),
    st.integers(min_value=100, max_value=5000).map(lambda n: "x" * n),
)
hostile_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=20,
)
hostile_record = st.fixed_dictionaries(
    {},
    optional={
        f: st.one_of(hostile_text, hostile_json)
        for f in ("user_id", "device_type", "ip", "device_id", "app_version", "locale", "device")
    },
)


@given(st.one_of(hostile_json, hostile_record))
def test_full_transform_of_hostile_json_is_a_row_or_a_rejection(value) -> None:
    masker = Masker(KEY_A)
    body = json.dumps(value)  # escapes lone surrogates as \\udXXX, as SQS bodies may carry
    out = transform(message(body), masker)
    assert isinstance(out, Row | Rejection)
    if isinstance(out, Row):
        doc = json.loads(body)
        address = ipaddress.ip_address(doc["ip"])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        assert masker.unmask("ip", out.masked_ip) == str(address)
        assert masker.unmask("device_id", out.masked_device_id) == doc["device_id"]
        assert len(out.masked_ip) <= MASK_MAX_CHARS and len(out.user_id) <= 128
        assert not CONTROL.search(out.user_id)
    else:
        assert REASON.fullmatch(out.reason) or out.reason.startswith("mask_too_long:"), out.reason
        assert open_body(masker, out.sealed_body, out.message_id) == body
