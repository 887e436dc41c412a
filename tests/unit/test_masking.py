"""masking: keys, subkeys, padded deterministic masks, rotation, sealed bodies.

The stored format itself is pinned by tests/unit/test_known_answers.py.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import random
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from login_etl.errors import ConfigError, MaskingError, UnknownMaskError
from login_etl.masking import (
    BODY_INFO,
    KEY_BYTES,
    MASK_INFO,
    MIN_DISTINCT_BYTES,
    Masker,
    b64url,
    check_key,
    decode_key,
    derive,
    generate_key,
    key_id,
    pad,
    unb64url,
    unpad,
)
from tests.unit.helpers import KEY_A, KEY_A_TEXT, KEY_B

MASK = re.compile(r"[a-z2-7]{8}\.[A-Za-z0-9_-]+")
FIELDS = ("ip", "device_id")
# Any text that can be encoded as UTF-8 (lone surrogates cannot and never reach masking).
plain_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]))


# -- keys ---------------------------------------------------------------------


def test_generate_key_is_64_random_bytes() -> None:
    first, second = generate_key(), generate_key()
    assert len(base64.b64decode(first, validate=True)) == KEY_BYTES == 64
    assert decode_key(first) == base64.b64decode(first)
    assert first != second


@pytest.mark.parametrize(
    "text",
    [
        KEY_A_TEXT,
        f"  {KEY_A_TEXT}\n",
        base64.urlsafe_b64encode(KEY_A).decode("ascii"),
    ],
    ids=["standard", "whitespace", "urlsafe"],
)
def test_decode_key_accepts(text: str) -> None:
    assert decode_key(text) == KEY_A


def _b64(n: int) -> str:
    return base64.b64encode(bytes(range(n))).decode("ascii")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n", "empty"),
        ("not base64 at all!", "not valid base64"),
        (KEY_A_TEXT[:-3], "not valid base64"),
        (KEY_A_TEXT + "é", "not valid base64"),
        (_b64(32), "must decode to 64 bytes"),
        (_b64(63), "must decode to 64 bytes"),
        (_b64(65), "must decode to 64 bytes"),
        (_b64(128), "must decode to 64 bytes"),
    ],
)
def test_decode_key_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        decode_key(text, name="MY_KEY")
    text_of_error = str(info.value)
    assert text_of_error.startswith("MY_KEY ")
    if text.strip():
        assert text.strip() not in text_of_error
        assert text.strip()[:12] not in text_of_error


def _with_distinct(count: int, seed: int) -> bytes:
    """64 bytes holding exactly `count` distinct values, in a shuffled, non-counting order."""
    rng = random.Random(seed)
    values = rng.sample(range(256), count)
    key = values + [rng.choice(values) for _ in range(KEY_BYTES - count)]
    rng.shuffle(key)
    return bytes(key)


def _with_steps(count: int, seed: int) -> bytes:
    """64 bytes whose 63 steps (next minus previous, mod 256) take exactly `count` values."""
    rng = random.Random(seed)
    values = rng.sample(range(256), count)
    steps = values + [rng.choice(values) for _ in range(KEY_BYTES - 1 - count)]
    rng.shuffle(steps)
    key = [rng.randrange(256)]
    for step in steps:
        key.append((key[-1] + step) % 256)
    return bytes(key)


WEAK_KEYS = {
    "all-zero": bytes(64),
    "all-ff": b"\xff" * 64,
    "two-byte-pattern": b"\x5a\xa5" * 32,
    "random-16-byte-pattern": os.urandom(16) * 4,
    "random-31-byte-pattern": (os.urandom(31) * 3)[:64],
    "eight-values": _with_distinct(8, seed=1),
    "hex-text": os.urandom(32).hex().encode(),
    "word-text": b"correct horse battery staple correct horse battery staple xyzzy!"[:64],
    "counting": bytes(range(64)),
    "counting-down": bytes(range(255, 191, -1)),
    "stepping-by-7": bytes(i * 7 % 256 for i in range(64)),
    "31-distinct": _with_distinct(MIN_DISTINCT_BYTES - 1, seed=2),
    "31-distinct-steps": _with_steps(MIN_DISTINCT_BYTES - 1, seed=3),
}


@pytest.mark.parametrize("raw", list(WEAK_KEYS.values()), ids=list(WEAK_KEYS))
@pytest.mark.parametrize("how", ["decode_key", "check_key"])
def test_keys_with_no_entropy_are_refused(raw: bytes, how: str) -> None:
    assert len(raw) == KEY_BYTES
    text = base64.b64encode(raw).decode("ascii")
    with pytest.raises(ConfigError, match="not a random key") as info:
        if how == "decode_key":
            decode_key(text, name="MY_KEY")
        else:
            check_key(raw, name="MY_KEY")
    message = str(info.value)
    assert message.startswith("MY_KEY ") and "\n" not in message
    assert text[:12] not in message and raw.hex()[:16] not in message


@pytest.mark.parametrize(
    "raw",
    [
        _with_distinct(MIN_DISTINCT_BYTES, seed=2),
        _with_steps(MIN_DISTINCT_BYTES, seed=3),
        KEY_A,
        KEY_B,
    ],
    ids=["32-distinct", "32-distinct-steps", "key-a", "key-b"],
)
def test_keys_at_the_bound_pass(raw: bytes) -> None:
    assert check_key(raw, name="MY_KEY") == raw


def test_the_bound_cases_are_what_they_say() -> None:
    for count, seed in ((31, 2), (32, 2)):
        assert len(set(_with_distinct(count, seed))) == count
        steps = _with_distinct(count, seed)
        assert len({(b - a) % 256 for a, b in zip(steps, steps[1:], strict=False)}) >= 32
    for count, seed in ((31, 3), (32, 3)):
        key = _with_steps(count, seed)
        assert len({(b - a) % 256 for a, b in zip(key, key[1:], strict=False)}) == count
        assert len(set(key)) >= 32


def test_generated_and_random_keys_always_pass() -> None:
    # A random key fails with probability below 2^-65: these never may.
    for _ in range(3000):
        assert len(decode_key(generate_key())) == KEY_BYTES
        raw = os.urandom(KEY_BYTES)
        assert check_key(raw, name="K") == raw


def test_key_id_is_short_and_stable() -> None:
    assert key_id(KEY_A) == key_id(bytes(KEY_A))
    assert key_id(KEY_A) != key_id(KEY_B)
    assert re.fullmatch("[a-z2-7]{8}", key_id(KEY_A))
    assert Masker(KEY_A).key_id == key_id(KEY_A)


# -- masks --------------------------------------------------------------------


def test_mask_format(masker: Masker) -> None:
    mask = masker.mask("ip", "199.172.111.135")
    assert MASK.fullmatch(mask)
    assert mask.startswith(masker.key_id + ".")
    assert "199.172.111.135" not in mask


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ["199.172.111.135", "593-47-5928", "x", "é" * 50, "a b\tc"])
def test_mask_round_trip_and_determinism(masker: Masker, field: str, value: str) -> None:
    mask = masker.mask(field, value)
    assert mask == masker.mask(field, value) == Masker(KEY_A).mask(field, value)
    assert masker.unmask(field, mask) == value


def test_same_value_masks_differently_per_field(masker: Masker) -> None:
    assert masker.mask("ip", "123") != masker.mask("device_id", "123")


def test_different_values_mask_differently(masker: Masker) -> None:
    assert masker.mask("ip", "1.2.3.4") != masker.mask("ip", "1.2.3.5")


def test_different_keys_give_different_masks() -> None:
    a, b = Masker(KEY_A), Masker(KEY_B)
    mask_a, mask_b = a.mask("ip", "1.2.3.4"), b.mask("ip", "1.2.3.4")
    assert mask_a != mask_b
    assert mask_a.split(".")[0] == a.key_id != b.key_id == mask_b.split(".")[0]
    assert mask_a.split(".", 1)[1] != mask_b.split(".", 1)[1]


@given(st.sampled_from(FIELDS), plain_text)
def test_unmask_round_trip_any_text(field: str, value: str) -> None:
    masker = Masker(KEY_A)
    mask = masker.mask(field, value)
    assert MASK.fullmatch(mask)
    assert masker.unmask(field, mask) == value
    assert masker.unmask(field, f" {mask}\n") == value  # pasted with whitespace


@given(plain_text, plain_text)
def test_masks_are_equal_only_for_equal_values(a: str, b: str) -> None:
    masker = Masker(KEY_A)
    assert (masker.mask("ip", a) == masker.mask("ip", b)) == (a == b)


def test_mask_is_url_safe_without_padding(masker: Masker) -> None:
    masks = [masker.mask("ip", "x" * n) for n in range(40)]
    assert all(MASK.fullmatch(m) and "=" not in m for m in masks)


# -- rotation -----------------------------------------------------------------


def test_old_key_unmasks_old_masks() -> None:
    old, new = Masker(KEY_A), Masker(KEY_B, [KEY_A])
    old_mask = old.mask("ip", "1.2.3.4")
    assert new.unmask("ip", old_mask) == "1.2.3.4"
    new_mask = new.mask("ip", "1.2.3.4")
    assert new_mask.startswith(key_id(KEY_B) + ".")
    assert new_mask == Masker(KEY_B).mask("ip", "1.2.3.4")
    assert new.is_current(new_mask)
    assert not new.is_current(old_mask)
    assert new.key_id == key_id(KEY_B)
    assert new.old_key_ids == [key_id(KEY_A)]


def test_primary_repeated_as_old_key_is_not_listed_twice() -> None:
    masker = Masker(KEY_A, [KEY_A, KEY_B, KEY_B])
    assert masker.old_key_ids == [key_id(KEY_B)]


def test_without_the_old_key_old_masks_are_unknown() -> None:
    old_mask = Masker(KEY_A).mask("ip", "1.2.3.4")
    with pytest.raises(UnknownMaskError):
        Masker(KEY_B).unmask("ip", old_mask)


@pytest.mark.parametrize(
    "mask",
    ["", ".", "garbage", "abc.def", "zzzzzzzz.AAAA", "no-dot-here", "\x00", "é.é"],
)
def test_unmask_garbage(masker: Masker, mask: str) -> None:
    with pytest.raises(UnknownMaskError):
        masker.unmask("ip", mask)


def test_unmask_known_key_with_bad_payload(masker: Masker) -> None:
    good = masker.mask("ip", "1.2.3.4")
    kid, payload = good.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in [f"{kid}.", f"{kid}.A", f"{kid}.AAAA", f"{kid}.{flipped}", f"{kid}.{payload}é"]:
        with pytest.raises(UnknownMaskError):
            masker.unmask("ip", bad)


def test_unmask_with_the_wrong_field(masker: Masker) -> None:
    mask = masker.mask("ip", "1.2.3.4")
    with pytest.raises(UnknownMaskError, match="field 'device_id'"):
        masker.unmask("device_id", mask)


@given(st.text())
def test_unmask_arbitrary_text_only_raises_unknown_mask(text: str) -> None:
    masker = Masker(KEY_A)
    for candidate in (text, f"{masker.key_id}.{text}"):
        with pytest.raises(UnknownMaskError):
            masker.unmask("ip", candidate)


def test_unknown_mask_is_a_masking_error() -> None:
    assert issubclass(UnknownMaskError, MaskingError)


# -- secrets stay secret ------------------------------------------------------


def test_repr_and_str_hide_keys() -> None:
    masker = Masker(KEY_A, [KEY_B])
    for text in (repr(masker), str(masker)):
        for raw in (KEY_A, KEY_B):
            assert base64.b64encode(raw).decode() not in text
            assert base64.b64encode(raw).decode()[:16] not in text
            assert base64.urlsafe_b64encode(raw).decode()[:16] not in text
            assert raw.hex()[:16] not in text
            assert repr(raw)[:20] not in text
        assert key_id(KEY_A) in text  # the public fingerprint is fine


# -- sealed bodies --------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"x", b'{"ip": "1.2.3.4"}', bytes(range(256)) * 40])
def test_seal_round_trip(masker: Masker, data: bytes) -> None:
    sealed = masker.seal(data, "m-1")
    assert sealed.startswith(masker.key_id + ".")
    assert masker.open_sealed(sealed, "m-1") == data


@given(st.binary(), st.text())
def test_seal_round_trip_any_bytes_any_message_id(data: bytes, message_id: str) -> None:
    masker = Masker(KEY_A)
    assert masker.open_sealed(masker.seal(data, message_id), message_id) == data


def test_seal_is_not_deterministic(masker: Masker) -> None:
    data = b'{"ip": "1.2.3.4"}'
    sealed = {masker.seal(data, "m-1") for _ in range(20)}
    assert len(sealed) == 20
    assert all(b"1.2.3.4" not in s.encode() for s in sealed)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_draws_nonces_of_its_own() -> None:
    # Any nonce state kept in process memory would be copied into a child forked
    # after a seal, which would then hand out the very nonces its parent hands out next.
    masker = Masker(KEY_A)
    masker.seal(b"body", "m-0")  # a seal before the fork
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: send one nonce, and leave without pytest's teardown
        try:
            os.write(write, unb64url(masker.seal(b"body", "m-1").split(".")[1])[:16])
        finally:
            os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    parent = unb64url(masker.seal(b"body", "m-1").split(".")[1])[:16]
    assert len(child) == 16
    assert child != parent


def test_nonces_never_repeat_across_threads() -> None:
    # Many seals from several threads at once: every sealed body has its own nonce.
    masker = Masker(KEY_A)
    per_thread = 400

    def seal_many(i: int) -> list[str]:
        return [masker.seal(b"body", f"m-{i}-{j}") for j in range(per_thread)]

    with ThreadPoolExecutor(4) as pool:
        sealed = [s for chunk in pool.map(seal_many, range(4)) for s in chunk]
    nonces = {unb64url(s.split(".")[1])[:16] for s in sealed}
    assert len(nonces) == len(sealed) == 4 * per_thread
    # Unpredictable, not merely unrepeated: every byte of the nonce is random.
    # 1,600 uniform draws leave a position with under 200 of 256 values with
    # odds below 1e-40; a counter or a constant half has a handful at most.
    for i in range(16):
        assert len({n[i] for n in nonces}) > 200, f"nonce byte {i} barely varies"
    assert all(
        masker.open_sealed(s, f"m-{n // per_thread}-{n % per_thread}") == b"body"
        for n, s in enumerate(sealed)
    )


@pytest.mark.parametrize("other", ["m-2", "m-1 ", "M-1", "", "m-"])
def test_a_sealed_body_opens_only_for_its_message(masker: Masker, other: str) -> None:
    sealed = masker.seal(b"body of m-1", "m-1")
    with pytest.raises(MaskingError, match="moved from another message"):
        masker.open_sealed(sealed, other)


def test_sealed_with_old_key_opens_after_rotation() -> None:
    sealed = Masker(KEY_A).seal(b"body", "m-1")
    assert Masker(KEY_B, [KEY_A]).open_sealed(sealed, "m-1") == b"body"
    with pytest.raises(UnknownMaskError):
        Masker(KEY_B).open_sealed(sealed, "m-1")


def test_sealed_body_is_not_a_mask(masker: Masker) -> None:
    sealed = masker.seal(b"1.2.3.4", "m-1")
    with pytest.raises(UnknownMaskError):
        masker.unmask("ip", sealed)


def test_a_mask_is_not_a_sealed_body(masker: Masker) -> None:
    with pytest.raises(MaskingError):
        masker.open_sealed(masker.mask("ip", "1.2.3.4"), "m-1")


def test_open_sealed_tampered(masker: Masker) -> None:
    kid, payload = masker.seal(b"body", "m-1").split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in [f"{kid}.", f"{kid}.A", f"{kid}.{flipped}", f"{kid}.{payload[:10]}"]:
        with pytest.raises(MaskingError):
            masker.open_sealed(bad, "m-1")


@given(st.text())
def test_open_sealed_arbitrary_text_only_raises_masking_error(text: str) -> None:
    masker = Masker(KEY_A)
    for candidate in (text, f"{masker.key_id}.{text}"):
        with pytest.raises(MaskingError):
            masker.open_sealed(candidate, "m-1")


# -- lengths: masks show a 16-byte bucket, never a length ------------------------


@given(st.integers(0, 2**32 - 1))
def test_every_ipv4_mask_has_one_length(n: int) -> None:
    masker = Masker(KEY_A)
    ip = str(ipaddress.IPv4Address(n))
    assert len(masker.mask("ip", ip)) == len(masker.mask("ip", "0.0.0.0")) == 52


def test_shortest_and_longest_ipv4_masks_have_one_length(masker: Masker) -> None:
    lengths = {len(masker.mask("ip", ip)) for ip in ("0.0.0.0", "1.2.3.4", "255.255.255.255")}
    assert lengths == {52}


@pytest.mark.parametrize("field", FIELDS)
def test_mask_length_depends_only_on_the_bucket(masker: Masker, field: str) -> None:
    # Expected: key id (8) + "." + base64url of the SIV tag (16) and the padded value,
    # the value's bytes plus at least one byte of padding, rounded up to 16.
    for n in range(100):
        padded = (n // 16 + 1) * 16
        expected = 9 + len(base64.urlsafe_b64encode(bytes(16 + padded)).rstrip(b"="))
        assert len(masker.mask(field, "x" * n)) == expected, n


@given(st.binary(max_size=100))
def test_pad_round_trip(data: bytes) -> None:
    padded = pad(data)
    assert len(padded) % 16 == 0 and len(data) < len(padded) <= len(data) + 16
    assert unpad(padded) == data


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00" * 16, b"abc", b"x" * 15 + b"\x81", b"x" * 14 + b"\x80\x01", b"\x80" + bytes(31)],
    ids=["empty", "zeros", "short", "no-marker", "junk-after-marker", "a-whole-extra-block"],
)
def test_unpad_refuses_what_pad_never_makes(bad: bytes) -> None:
    with pytest.raises(ValueError):
        unpad(bad)


# -- only canonical base64url ----------------------------------------------------


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _lenient(text: str) -> bytes:
    """What Python's own base64url decoder makes of `text`."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _respell(mask: str) -> list[str]:
    """Other texts that a lenient base64 decoder would read as the same bytes."""
    kid, payload = mask.split(".")
    # 43 characters carry 258 bits for 32 bytes: the last one has 2 unused bits.
    sibling = payload[:-1] + _ALPHABET[_ALPHABET.index(payload[-1]) ^ 1]
    assert _lenient(sibling) == _lenient(payload)
    return [
        f"{kid}.{payload}=",  # padded
        f"{kid}.{payload[:10]}\n{payload[10:]}",  # a line break inside
        f"{kid}.{payload[:10]} {payload[10:]}",  # a space inside
        f"{kid}.{payload.replace('-', '+').replace('_', '/')}",  # standard alphabet
        f"{kid}.{payload}.",  # a second dot
        f"{kid}.{sibling}",  # unused bits set
        f"{kid.upper()}.{payload}",  # the key id in upper case
    ]


def test_only_canonical_base64url_is_accepted(masker: Masker) -> None:
    # '-' and '_' must occur so the standard-alphabet spelling differs.
    values = [f"10.0.0.{n}" for n in range(256)]
    mask = next(m for m in (masker.mask("ip", v) for v in values) if "-" in m or "_" in m)
    assert masker.unmask("ip", mask) in values
    for variant in _respell(mask):
        with pytest.raises(UnknownMaskError):
            masker.unmask("ip", variant)


@pytest.mark.parametrize("text", ["", "QQ", "QUI", "QUJD", "_-8"])
def test_unb64url_round_trips_canonical_text(text: str) -> None:
    assert b64url(unb64url(text)) == text


@pytest.mark.parametrize("text", ["Q", "QR", "QUJ=", "QU=J", "QU J", "QU+J", "QU/J", "QUJDé"])
def test_unb64url_refuses_other_spellings(text: str) -> None:
    with pytest.raises(ValueError):
        unb64url(text)


# -- one key, separate uses ------------------------------------------------------


def test_subkeys_are_hkdf_of_the_master_key_and_differ() -> None:
    mask_key, body_key = derive(KEY_A, MASK_INFO), derive(KEY_A, BODY_INFO)
    assert len(mask_key) == len(body_key) == 64
    assert len({mask_key, body_key, KEY_A}) == 3
    for info, subkey in (
        (b"login-etl v2 mask key", mask_key),
        (b"login-etl v2 sealed-body key", body_key),
    ):
        hkdf = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info)
        assert hkdf.derive(KEY_A) == subkey


def test_the_master_key_itself_opens_nothing(masker: Masker) -> None:
    mask = masker.mask("ip", "199.172.111.135")
    raw = base64.urlsafe_b64decode(mask.split(".")[1] + "=")
    with pytest.raises(InvalidTag):
        AESSIV(KEY_A).decrypt(raw, [b"ip"])
    with pytest.raises(InvalidTag):
        AESSIV(derive(KEY_A, BODY_INFO)).decrypt(raw, [b"ip"])  # nor the body key


def test_decode_key_accepts_unpadded_urlsafe_base64() -> None:
    unpadded = base64.urlsafe_b64encode(KEY_A).decode().rstrip("=")
    assert "=" not in unpadded and decode_key(unpadded) == KEY_A
