"""events.parse_event: validation, flattening and the rules for app_version and create_date."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from login_etl.events import (
    INT4_MAX,
    MAX_LENGTHS,
    REQUIRED,
    Invalid,
    LoginEvent,
    create_date_for,
    parse_app_version,
    parse_event,
)
from tests.unit.helpers import CONTROL, DROP, REASON, RECORD, record_body

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def parse(body: str, sent_at: datetime = SENT) -> LoginEvent | Invalid:
    return parse_event(body, sent_at)


def reason_of(body: str) -> str:
    result = parse(body)
    assert isinstance(result, Invalid), f"expected Invalid, got {result!r}"
    return result.reason


def assert_well_formed(result: object) -> None:
    """The contract of parse_event's result, whatever the input."""
    if isinstance(result, Invalid):
        assert REASON.fullmatch(result.reason), result.reason
        assert result.reason != "internal_error"  # would mean a bug inside the parser
    else:
        assert isinstance(result, LoginEvent)
        for name in REQUIRED:
            value = getattr(result, "app_version_raw" if name == "app_version" else name)
            assert isinstance(value, str) and value.strip() and not CONTROL.search(value)
            value.encode("utf-8")  # no lone surrogates
        assert str(ipaddress.ip_address(result.ip)) == result.ip  # canonical
        assert not CONTROL.search(result.locale or "")
        for name, limit in MAX_LENGTHS.items():
            value = getattr(result, name)
            assert value is None or len(value) <= limit
        assert 0 <= result.app_version <= INT4_MAX
        assert result.create_date == create_date_for(SENT)


# -- valid records -------------------------------------------------------------


def test_sample_record_parses_to_login_event() -> None:
    event = parse(record_body())
    assert event == LoginEvent(
        user_id=RECORD["user_id"],
        device_type="android",
        ip="199.172.111.135",
        device_id="593-47-5928",
        locale="RU",
        app_version=2,
        app_version_raw="2.3.0",
        create_date=date(2024, 5, 1),
    )


@pytest.mark.parametrize(
    ("raw", "major"),
    [
        ("2.3.0", 2),
        ("0.96", 0),
        ("10.0.1", 10),
        ("7.31", 7),
        ("0.2.6", 0),
        ("5", 5),
        (" 3.1 ", 3),
        ("007.1", 7),
        (str(INT4_MAX), INT4_MAX),
        (f"{INT4_MAX}.9.9", INT4_MAX),
    ],
)
def test_app_version_major(raw: str, major: int) -> None:
    assert parse_app_version(raw) == major
    event = parse(record_body(app_version=raw))
    assert isinstance(event, LoginEvent)
    assert event.app_version == major
    assert event.app_version_raw == raw


@pytest.mark.parametrize(
    "raw", ["beta", "v1", "", "   ", "1..2", "1.", ".1", "1.2.", "1-2", "1.2b", "+1", "-1", "١"]
)
def test_app_version_not_numeric(raw: str) -> None:
    assert parse_app_version(raw) == Invalid("invalid_app_version")


@pytest.mark.parametrize("raw", ["beta", "v1", "1..2", "2.x", "١.٢"])
def test_event_with_non_numeric_app_version_is_rejected(raw: str) -> None:
    assert reason_of(record_body(app_version=raw)) == "invalid_app_version"


@pytest.mark.parametrize("raw", ["99999999999", str(INT4_MAX + 1), "1" * 5000, "99999999999.1"])
def test_app_version_out_of_range(raw: str) -> None:
    assert parse_app_version(raw) == Invalid("out_of_range:app_version")
    assert reason_of(record_body(app_version=raw)) == "out_of_range:app_version"


@pytest.mark.parametrize("value", [None, DROP])
def test_locale_null_or_missing_is_none(value: object) -> None:
    event = parse(record_body(locale=value))
    assert isinstance(event, LoginEvent)
    assert event.locale is None


@pytest.mark.parametrize("value", [1, 1.5, True, False, ["RU"]])
def test_locale_of_wrong_type(value: object) -> None:
    assert reason_of(record_body(locale=value)) == "wrong_type:locale"


def test_locale_object_flattens_away() -> None:
    event = parse(record_body(locale={"code": "RU"}))  # becomes locale_code; locale is absent
    assert isinstance(event, LoginEvent)
    assert event.locale is None


def test_extra_fields_are_ignored() -> None:
    event = parse(record_body(extra="x", another={"deep": [1, 2]}, number=5))
    assert isinstance(event, LoginEvent)
    assert event == parse(record_body())


# -- required fields --------------------------------------------------------


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [DROP, None])
def test_missing_field(field: str, value: object) -> None:
    assert reason_of(record_body(**{field: value})) == f"missing_field:{field}"


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", [1, 0, 2.5, True, False, [], ["x"]])
def test_wrong_type(field: str, value: object) -> None:
    assert reason_of(record_body(**{field: value})) == f"wrong_type:{field}"


@pytest.mark.parametrize("field", REQUIRED)
@pytest.mark.parametrize("value", ["", " ", "\t\n", "\u3000"])
def test_empty_field(field: str, value: str) -> None:
    assert reason_of(record_body(**{field: value})) == f"empty_field:{field}"


@pytest.mark.parametrize("field", ["user_id", "device_type", "locale"])
def test_length_limits(field: str) -> None:
    limit = MAX_LENGTHS[field]
    at_limit = parse(record_body(**{field: "a" * limit}))
    assert isinstance(at_limit, LoginEvent)
    assert getattr(at_limit, field) == "a" * limit
    assert reason_of(record_body(**{field: "a" * (limit + 1)})) == f"too_long:{field}"


def test_user_id_limit_counts_characters_not_bytes() -> None:
    event = parse(record_body(user_id="é" * 128))
    assert isinstance(event, LoginEvent)
    assert reason_of(record_body(user_id="é" * 129)) == "too_long:user_id"


@pytest.mark.parametrize("field", [*REQUIRED, "locale"])
def test_lone_surrogate(field: str) -> None:
    body = record_body(**{field: "a\ud800b"})
    assert "\\ud800" in body  # sent as a JSON escape, as a producer would
    assert reason_of(body) == f"invalid_unicode:{field}"


# -- document shape -------------------------------------------------------------


@pytest.mark.parametrize(
    "body", ["", "not json", "{", '{"user_id": }', "{'single': 'quotes'}", "NaNx", "\x00"]
)
def test_invalid_json(body: str) -> None:
    assert reason_of(body) == "invalid_json"


@pytest.mark.parametrize("body", ["[]", "[1, 2]", "42", "1.5", '"a string"', "null", "true"])
def test_not_an_object(body: str) -> None:
    assert reason_of(body) == "not_an_object"


def test_brief_malformed_record_is_rejected() -> None:
    assert reason_of('{"foo": "oops_wrong_msg_type", "bar": "123"}') == "missing_field:user_id"


def sns(message: Any) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "abc", "Message": message})


def test_sns_envelope_is_unwrapped() -> None:
    assert parse(sns(record_body())) == parse(record_body())


def test_an_envelope_inside_the_envelope_is_not_unwrapped() -> None:
    # SNS wraps once: a message that is itself an envelope has no stored field of its own.
    assert reason_of(sns(sns(record_body()))) == "missing_field:user_id"


@pytest.mark.parametrize("message", [None, 1, {"user_id": "x"}, ["a"]])
def test_sns_message_not_a_string(message: object) -> None:
    assert reason_of(sns(message)) == "invalid_sns_message"


@pytest.mark.parametrize(
    ("message", "reason"),
    [("not json", "invalid_json"), ("[1]", "not_an_object"), ("{}", "missing_field:user_id")],
)
def test_sns_message_is_validated(message: str, reason: str) -> None:
    assert reason_of(sns(message)) == reason


def test_other_type_is_not_unwrapped() -> None:
    body = json.dumps({"Type": "SubscriptionConfirmation", "Message": record_body()})
    assert reason_of(body) == "missing_field:user_id"


def test_nested_objects_are_flattened() -> None:
    record = {k: v for k, v in RECORD.items() if k not in ("device_id", "device_type")}
    record["device"] = {"id": "593-47-5928", "type": "ios"}
    event = parse(json.dumps(record))
    assert isinstance(event, LoginEvent)
    assert (event.device_id, event.device_type) == ("593-47-5928", "ios")


def test_flattening_goes_several_levels() -> None:
    record = dict(RECORD)
    del record["device_id"]
    record["device"] = {"id": {"x": "deep"}}  # → device_id_x, so device_id is still missing
    assert reason_of(json.dumps(record)) == "missing_field:device_id"


@pytest.mark.parametrize("nested_first", [False, True])
def test_conflicting_flattened_key(nested_first: bool) -> None:
    nested = {"device": {"id": "other"}}
    record = {**nested, **RECORD} if nested_first else {**RECORD, **nested}
    assert reason_of(json.dumps(record)) == "conflicting_field:device_id"


def test_conflicts_between_other_keys_are_ignored_and_never_quoted() -> None:
    # Keys are message content: a reason must never carry one (reasons become
    # log fields and metric labels). Only fields we store can conflict.
    name = "203.0.113.9"
    body = json.dumps({**RECORD, name + "_x": 1, name: {"x": 2}})
    assert isinstance(parse(body), LoginEvent)
    body = json.dumps({**RECORD, "device": {"type": "ios"}})
    assert reason_of(body) == "conflicting_field:device_type"
    assert REASON.fullmatch(reason_of(body))


# -- create_date ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent_at", "expected"),
    [
        (datetime(2024, 5, 1, 0, 0, tzinfo=UTC), date(2024, 5, 1)),
        (datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC), date(2024, 5, 1)),
        # 23:30 at UTC-5 is 04:30 the next day in UTC
        (datetime(2024, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))), date(2024, 5, 2)),
        # 01:00 at UTC+9 is 16:00 the previous day in UTC
        (datetime(2024, 5, 1, 1, 0, tzinfo=timezone(timedelta(hours=9))), date(2024, 4, 30)),
        (datetime(2023, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5))), date(2024, 1, 1)),
        # naive means UTC, whatever the machine's local zone
        (datetime(2024, 5, 1, 23, 30), date(2024, 5, 1)),
        (datetime(2024, 5, 1, 0, 30), date(2024, 5, 1)),
    ],
)
def test_create_date_is_utc_date_of_sent_at(sent_at: datetime, expected: date) -> None:
    assert create_date_for(sent_at) == expected
    event = parse(record_body(), sent_at)
    assert isinstance(event, LoginEvent)
    assert event.create_date == expected


def test_repr_hides_pii() -> None:
    event = parse(record_body())
    assert isinstance(event, LoginEvent)
    text = repr(event) + str(event)
    for secret in (RECORD["ip"], RECORD["device_id"], RECORD["user_id"]):
        assert secret not in text


# -- never raises -------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)
field_values = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.text(max_size=140),
    st.sampled_from(["2.3.0", "0.96", "1..2", "99999999999", "", " ", "a\x00", "x" * 129]),
    st.from_regex(r"[0-9]{1,12}(\.[0-9]{1,3}){0,3}", fullmatch=True),
    st.dictionaries(st.sampled_from(["id", "type", "x"]), st.text(max_size=5), max_size=2),
)
record_like = st.fixed_dictionaries(
    {},
    optional={
        name: field_values
        for name in [*REQUIRED, "locale", "device", "device_id_x", "foo", "Type", "Message"]
    },
)


@given(st.text())
def test_never_raises_on_text(body: str) -> None:
    assert_well_formed(parse(body))


@given(json_values)
def test_never_raises_on_json(value: Any) -> None:
    assert_well_formed(parse(json.dumps(value)))


@given(record_like)
def test_never_raises_on_record_like(record: dict[str, Any]) -> None:
    assert_well_formed(parse(json.dumps(record)))


@given(record_like)
def test_sns_wrapping_does_not_change_the_result(record: dict[str, Any]) -> None:
    record.pop("Type", None)
    body = json.dumps(record)
    assert parse(sns(body)) == parse(body)


@given(
    st.sampled_from([*REQUIRED, "locale"]),
    st.text(alphabet=st.characters(max_codepoint=0x9F, categories=["Cc"]), min_size=1),
)
def test_control_characters_in_fields(field: str, value: str) -> None:
    result = parse(record_body(**{field: value}))
    assert_well_formed(result)
    # blank first (tab, newline, U+001C-U+001F and U+0085 are whitespace to str.strip)
    reason = "empty_field" if not value.strip() and field != "locale" else "control_character"
    assert result == Invalid(f"{reason}:{field}")


@given(st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=50))
def test_control_characters_as_body(body: str) -> None:
    assert_well_formed(parse(body))


@pytest.mark.parametrize(
    "body",
    [
        "[" * 100_000,
        "{" * 100_000,
        '{"a":' * 5000 + "1" + "}" * 5000,
        "[" * 5000 + "]" * 5000,
        '"' + "x" * 5_000_000 + '"',
        json.dumps({"k" * 1_000_000: 1}),
        json.dumps({**RECORD, "big": "x" * 2_000_000}),
        sns("[" * 100_000),
    ],
    ids=["brackets", "braces", "dicts-5000", "lists-5000", "huge-string", "huge-key", "big", "sns"],
)
def test_hostile_bodies(body: str) -> None:
    assert_well_formed(parse(body))


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=900))
def test_deep_nesting_inside_valid_record(depth: int) -> None:
    nested = '{"n":' * depth + '"leaf"' + "}" * depth
    result = parse(record_body()[:-1] + ', "nested": ' + nested + "}")
    assert_well_formed(result)
    # deep parts are ignored by flattening, so the record is still valid
    # (or, past the JSON decoder's own recursion limit, invalid_json)
    assert result == parse(record_body()) or result == Invalid("invalid_json")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("00000000001.2", 1), ("000.1", 0), ("02147483647", 2**31 - 1)],
)
def test_app_version_leading_zeros_count_by_value(raw: str, expected: int) -> None:
    assert parse_app_version(raw) == expected
