"""reveal: one safe line per value, and bodies shown with ip and device_id masked."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from login_etl import scan
from login_etl.masking import Masker
from login_etl.reveal import escape, masked_body
from tests.unit.helpers import KEY_A, RECORD

IP, DEVICE = RECORD["ip"], RECORD["device_id"]


# -- escape ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("10.0.0.1\n6.6.6.6", "10.0.0.1\\x0a6.6.6.6"),
        ("\x1b[2Jdev", "\\x1b[2Jdev"),
        ("a\tb\rc", "a\\x09b\\x0dc"),
        ("del\x7f", "del\\x7f"),
        ("next\x85line", "next\\x85line"),
        ("sep\u2028arator", "sep\\u2028arator"),
        ("back\\slash", "back\\\\slash"),
        ("lone \ud800", "lone \\ud800"),
        ("é ü 東京", "é ü 東京"),
    ],
)
def test_escape(text: str, shown: str) -> None:
    assert escape(text) == shown


@given(st.text())
def test_escape_gives_one_printable_line_that_can_be_read_back(text: str) -> None:
    shown = escape(text)
    assert shown.isprintable()
    assert len(shown.splitlines()) <= 1
    shown.encode("utf-8")  # no lone surrogate left
    # Unambiguous: Python reads the escapes back to the original.
    decoded = shown.encode("ascii", "backslashreplace").decode("unicode_escape")
    assert decoded == text


# -- masked_body -------------------------------------------------------------------


@pytest.fixture
def masker() -> Masker:
    return Masker(KEY_A)


def test_top_level_fields_are_masked_as_user_logins_holds_them(masker: Masker) -> None:
    shown = json.loads(masked_body(json.dumps(RECORD), masker))
    assert shown["ip"] == masker.mask("ip", IP)
    assert shown["device_id"] == masker.mask("device_id", DEVICE)
    assert {k: v for k, v in shown.items() if k not in ("ip", "device_id")} == {
        k: v for k, v in RECORD.items() if k not in ("ip", "device_id")
    }


def test_ip_is_masked_in_canonical_form(masker: Masker) -> None:
    shown = json.loads(masked_body('{"ip": "2001:DB8:0:0::1"}', masker))
    assert shown["ip"] == masker.mask("ip", "2001:db8::1")


@pytest.mark.parametrize(
    "body",
    [
        '{"device": {"id": "593-47-5928"}, "ip": "199.172.111.135"}',
        '{"x": [{"y": {"ip": "199.172.111.135", "IP": "199.172.111.135"}}]}',
        '{"ip": "199.172.111.135", "ip": "199.172.111.135"}',
        '{"ip": 199172111135, "device_id": 5934759281.5e3}',
        '{"ip": {"v4": "199.172.111.135"}, "device_id": ["593-47-5928"]}',
        json.dumps({"Type": "Notification", "Message": json.dumps(RECORD)}),
        json.dumps({"Type": "Notification", "Message": json.dumps({"device": {"id": DEVICE}})}),
        '{"user_id": "u", "ip": "199.172.111.135"',  # not JSON
        "199.172.111.135 593-47-5928",
        "[" * 5000 + "]" * 5000,
        '{"ip": "\\ud800 199.172.111.135"}',
        '{"client_ip": "199.172.111.135", "old_device_id": "593-47-5928"}',
        '{"session": {"client": {"ip": "199.172.111.135"}}}',
    ],
    ids=[
        "flattened",
        "deep-and-upper-case",
        "repeated",
        "numbers",
        "object-and-array",
        "sns",
        "sns-flattened",
        "truncated",
        "plain-text",
        "too-deep",
        "lone-surrogate",
        "suffixed-names",
        "deep-flattened",
    ],
)
def test_no_plaintext_pii_survives(masker: Masker, body: str) -> None:
    shown = masked_body(body, masker)
    for secret in (IP, DEVICE, "199172111135", "5934759281", "593-47-5928"):
        assert secret not in shown, shown


def test_a_body_that_is_not_json_is_hidden_whole(masker: Masker) -> None:
    body = '{"user_id": "u", "ip": "199.172.111.135"'
    assert masked_body(body, masker) == f"[{len(body)} characters, not JSON: hidden; " + (
        "--reveal-pii shows them]"
    )


def test_everything_else_is_kept_exactly(masker: Masker) -> None:
    body = '{"n": 1.50, "big": 12345678901234567890, "t": true, "z": null, "s": "é\\n", "a": [1e3]}'
    assert json.loads(masked_body(body, masker)) == json.loads(body)
    assert "1.50" in masked_body(body, masker)  # numbers written back as they were
    assert "12345678901234567890" in masked_body(body, masker)


def test_names_that_end_in_a_pii_field_are_masked_as_that_field(masker: Masker) -> None:
    body = '{"client_ip": "1.2.3.4", "old_device_id": "x-1", "tip": "keep", "ipx": "keep"}'
    shown = json.loads(masked_body(body, masker))
    assert shown == {
        "client_ip": masker.mask("ip", "1.2.3.4"),
        "old_device_id": masker.mask("device_id", "x-1"),
        "tip": "keep",
        "ipx": "keep",
    }


def test_a_null_ip_stays_null(masker: Masker) -> None:
    assert json.loads(masked_body('{"ip": null}', masker)) == {"ip": None}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["ip", "device_id", "device", "id", "x"]), inner)
        ),
        max_leaves=12,
    )
)
def test_generated_bodies_mask_every_ip_and_device_id(doc: object) -> None:
    masker = Masker(KEY_A)
    text = masked_body(json.dumps(doc), masker)
    if text.endswith("PII in pieces: hidden; --reveal-pii shows them]"):
        # Hidden whole (a value found only across pieces, such as a one-letter device
        # id inside the name "device_id"): the marker holds the body's length, nothing else.
        hidden = "PII in pieces: hidden; --reveal-pii shows them"
        assert text == f"[{len(json.dumps(doc))} characters, {hidden}]"
        return
    shown = json.loads(text)

    def is_pii(name: str) -> bool:  # a word of the flattened name says ip, or device and id
        spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
        spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
        found = set(re.split(r"[^a-z0-9]+", spaced.lower()))
        return bool(found & {"ip", "ips", "ipv4", "ipv6", "ipaddr", "ipaddress"}) or (
            {"device", "id"} <= found or "deviceid" in found
        )

    def is_address(text: str) -> bool:
        try:
            ipaddress.ip_address(text.strip())
        except ValueError:
            return False
        return "%" not in text

    own_values: dict[str, list[str]] = {"ip": [], "device_id": []}

    def collect(value: object, into: list[str] | None, prefix: str = "") -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                name = prefix + key
                field = "ip" if is_pii(name) and "ip" in name.lower() else "device_id"
                collect(child, own_values[field] if is_pii(name) else into, name + "_")
        elif isinstance(value, list):
            for item in value:
                collect(item, into)
        elif into is not None and type(value) in (str, int):
            into.append(value if isinstance(value, str) else json.dumps(value))

    collect(doc, None)
    own = scan.Own.of(own_values["ip"], own_values["device_id"])
    # A value under a PII name nested in another is an own value of either kind.
    either = [*own_values["ip"], *own_values["device_id"]]
    names = ("ip", "device_id", "device", "id", "x")
    assume(not any(scan.finding(k, scan.Own.of(either, either)) for k in names))

    def check(original: object, masked: object, prefix: str = "") -> None:
        if isinstance(original, dict):
            assert isinstance(masked, dict) and masked.keys() == original.keys()
            for key, value in original.items():
                name = prefix + key
                if not is_pii(name):
                    check(value, masked[key], name + "_")
                elif value is not None:
                    assert isinstance(masked[key], str)
                    assert masked[key].startswith(masker.key_id + ".")
        elif isinstance(original, list):
            assert isinstance(masked, list) and len(masked) == len(original)
            for a, b in zip(original, masked, strict=True):
                check(a, b)
        elif isinstance(original, str) and is_address(original):
            assert isinstance(masked, str) and masked.startswith(masker.key_id + ".")
        elif not (isinstance(original, str) and original.strip("\ufeff \t\n\r")[:1] in ("{", "[")):
            text = original if isinstance(original, str) else json.dumps(original)
            if original is None or isinstance(original, bool) or not scan.finding(text, own):
                assert masked == original
            else:  # an address inside a text, or a copy of the body's own ip or device id
                assert isinstance(masked, str) and scan.finding(masked, own) is None

    check(doc, shown)


@pytest.mark.parametrize(
    "body",
    [
        # An envelope whose message is not JSON: it cannot be searched, so it is hidden.
        '{"Type":"Notification","Message":"{\\"user_id\\":\\"u1\\",\\"ip\\":\\"10.20.30.40\\",'
        '\\"device_id\\":\\"SECRETDEV1\\""}',
        '{"Type":"Notification","Message":"\\ufeff{\\"ip\\":\\"10.20.30.40\\",'
        '\\"device_id\\":\\"SECRETDEV1\\"}"}',
        '{"note": "10.20.30.40", "other": "SECRETDEV1" , "deviceId": "SECRETDEV1"}',
        '{"ipAddress": "10.20.30.40", "Device-ID": "SECRETDEV1"}',
        '{"sessions": [{"IP": "10.20.30.40", "device": {"ID": "SECRETDEV1"}}]}',
    ],
)
def test_hostile_shapes_reveal_nothing(masker: Masker, body: str) -> None:
    shown = masked_body(body, masker)
    assert "10.20.30.40" not in shown
    if "deviceId" in body or "Device-ID" in body or '"ID"' in body or "Message" in body:
        assert shown.count("SECRETDEV1") <= body.count('"other": "SECRETDEV1"')


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ('{"device_id": "SECRETDEV-9", "note": "from 198.51.100.99:443"}', "from [address]:443"),
        ('{"device_id": "SECRETDEV-9", "x": {"SECRETDEV-9": 1}}', {"[device_id]": 1}),
        ('{"device_id": "SECRETDEV-9", "udid": "SECRETDEV-9"}', "[device_id]"),
        ('{"device_id": "SECRETDEV-9", "x": "secretdev-9/b"}', "[device_id]/b"),
        ('{"device_id": "5934759281", "x": 5934759281}', "[device_id]"),
        ('{"ip": "203.0.113.7", "x": 3405803783}', "[ip]"),
        ('{"ip": "203.0.113.7", "x": "http://203.0.113.7/login"}', "http://[address]/login"),
        ('{"x": "see [2001:DB8::1]:443"}', "see [[address]]:443"),
        ('{"x": ["203.0.113.7:1"]}', ["[address]:1"]),
        ('{"x": {"seen_198.51.100.1": true}}', {"seen_[address]": True}),
        ('{"x": "\\uff11\\uff19\\uff18.51.100.99"}', "[hidden]"),
        ('{"x": "2.3.0 ok"}', "2.3.0 ok"),
    ],
)
def test_masked_mode_hides_addresses_and_own_values_anywhere(
    masker: Masker, body: str, shown: object
) -> None:
    text = masked_body(body, masker)
    assert json.loads(text)["x" if '"x"' in body else ("note" if "note" in body else "udid")] == (
        shown
    )
    for plain in ("198.51.100", "SECRETDEV-9", "secretdev-9", "5934759281", "3405803783"):
        assert plain not in text
    assert "2001:" not in text.lower() and "203.0.113.7" not in text


@pytest.mark.parametrize(
    "note",
    [
        "0xC7.0xAC.0x6F.0x87",  # dotted hex
        "0307.0254.0157.0207",  # dotted octal
        "199.172.28551",  # inet_aton's short form of the own ip
        "199-172-111-135",
        "199 . 172 . 111 . 135",
        "1\u200b9\u200b9.172.111.135",  # zero-width spaces: cutting the address left "19"
        "199\u3002172\u3002111\u3002135",
        "199&#46;172&#46;111&#46;135",
        "199%252E172%252E111%252E135",
        "".join(f"\\u{ord(c):04x}" for c in "199.172.111.135"),
        "59347 5928",  # the own device id with other separators
        "593_47_5928",
    ],
)
def test_masked_mode_hides_encoded_addresses_and_own_values(masker: Masker, note: str) -> None:
    text = masked_body(json.dumps({**RECORD, "note": note}), masker)
    assert json.loads(text)["note"] in ("[hidden]", "[address]")


@pytest.mark.parametrize(
    "pieces",
    [
        '"note": ["593-47", "-5928"]',
        '"note": [199, 172, 111, 135]',
        '"note": ["199.172.11", "1.135"]',
        '"note": {"593-47": "-5928"}',
        '"a": "593-47", "b": "-5928"',
    ],
)
def test_masked_mode_hides_a_body_whose_pieces_hold_an_own_value(
    masker: Masker, pieces: str
) -> None:
    body = json.dumps(RECORD)[:-1] + ", " + pieces + "}"
    assert masked_body(body, masker) == f"[{len(body)} characters, PII in pieces: hidden; " + (
        "--reveal-pii shows them]"
    )
