"""Known answers: stored masks and sealed bodies must keep opening, byte for byte.

Every mask in `user_logins` and every sealed body in `user_logins_rejected`
was made by the code as it was on the day it was stored. A change to the
key-id salt, the HKDF info strings, the padding, the associated data, the
encoding or the nonce layout would still round-trip in every other test, yet
orphan all of that data. These literals were made once and are never
recomputed by the code under test; each is also opened by the construction
written out below with `cryptography`'s AESSIV and HKDF alone (the one
docs/security.md documents).

The format changed once, on purpose, before any deployment: HKDF subkeys,
padded values, sealed bodies bound to their message id. When it is changed on
purpose again (with a `rekey` path for old data), regenerate the literals with::

    .venv/bin/python -c "
    from login_etl.masking import Masker, key_id
    a, b = bytes(range(64)), bytes(range(64, 128))
    print(key_id(a), key_id(b))
    print(Masker(a).mask('ip', '199.172.111.135'), Masker(a).mask('ip', '2001:db8::1'))
    print(Masker(a).mask('device_id', '593-47-5928'), Masker(b).mask('ip', '199.172.111.135'))
    print(Masker(a).seal(BODY.encode(), 'msg-1'))"

and update `_kat_unmask` / `_kat_open` below to the new documented construction.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from login_etl.errors import MaskingError, UnknownMaskError
from login_etl.masking import Masker, key_id

# The keys the literals were made with. Configuration would refuse them (a
# counting sequence is not a random key); the construction takes any bytes.
KEY_A, KEY_B = bytes(range(64)), bytes(range(64, 128))

KEY_A_ID, KEY_B_ID = "7jyit6td", "2qziraxf"
IP, IPV6, DEVICE_ID = "199.172.111.135", "2001:db8::1", "593-47-5928"
MASK_A_IP = "7jyit6td.JtG-FBzrbEOa4IhFDMAwfQTIatZ0Ej9UJDtacPr9wRs"
MASK_A_IPV6 = "7jyit6td.y2oJLD0rkqfGDZ6bZbaj-Xjqp3XNWdYBtbZ22YtJOgA"
MASK_A_DEVICE = "7jyit6td.wA2q90TJes26bCauUsgL7vNe56sZ8Witk-y8U94mukU"
MASK_B_IP = "2qziraxf.EWUTJ9ojHprsIY67Vr65YABjIsXt705ehJv7Q9ci8Vs"
# Rejected bodies sealed under KEY_A (random nonce, so made once and stored).
BODY, BODY_ID = '{"user_id": "u", "ip": "not json', "msg-1"
SEALED_A = (
    "7jyit6td.o5uJddtXnyTY9hg59Povo62wEY56eMWbwJ7GTi75rNv3D4bLu1iYH65o"
    "daqJi7QF5d21ihulFkMTOET9P_z6Gw"
)
# A body holding a lone surrogate (SQS accepts it, UTF-8 cannot encode it): sealed
# as UTF-8 with surrogatepass.
SURROGATE_BODY, SURROGATE_ID = "not json \ud800", "msg-2"
SEALED_SURROGATE_A = "7jyit6td.NyH-2WpUHM_dxLZGRRDMGLrKuI-Hue1qH9YymFveyoXfUfiopF0mU8QygEg"


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info).derive(key)


def _kat_key_id(key: bytes) -> str:
    """First 40 bits of SHA-256("login-etl key id" NUL key), base32, lower case."""
    return (
        base64.b32encode(hashlib.sha256(b"login-etl key id\x00" + key).digest()[:5])
        .decode()
        .lower()
    )


def _kat_unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kat_unmask(key: bytes, field: str, mask: str) -> str:
    """AES-SIV under HKDF(key, "login-etl v2 mask key"), the column name as associated
    data, then the 0x80 0x00… padding removed."""
    kid, _, payload = mask.partition(".")
    assert kid == _kat_key_id(key)
    padded = AESSIV(_hkdf(key, b"login-etl v2 mask key")).decrypt(
        _kat_unb64url(payload), [field.encode()]
    )
    assert len(padded) % 16 == 0
    return padded.rstrip(b"\x00")[:-1].decode()


def _kat_open(key: bytes, sealed: str, message_id: str) -> bytes:
    """base64url(16-byte nonce + AES-SIV ciphertext) under HKDF(key, "login-etl v2
    sealed-body key"), associated data [b"login-etl:rejected-body", message id, nonce]."""
    kid, _, payload = sealed.partition(".")
    assert kid == _kat_key_id(key)
    raw = _kat_unb64url(payload)
    body_key = AESSIV(_hkdf(key, b"login-etl v2 sealed-body key"))
    return body_key.decrypt(raw[16:], [b"login-etl:rejected-body", message_id.encode(), raw[:16]])


def test_known_key_ids() -> None:
    assert (key_id(KEY_A), key_id(KEY_B)) == (KEY_A_ID, KEY_B_ID)
    assert (_kat_key_id(KEY_A), _kat_key_id(KEY_B)) == (KEY_A_ID, KEY_B_ID)
    assert (Masker(KEY_A).key_id, Masker(KEY_B).key_id) == (KEY_A_ID, KEY_B_ID)


@pytest.mark.parametrize(
    ("key", "field", "value", "stored"),
    [
        (KEY_A, "ip", IP, MASK_A_IP),
        (KEY_A, "ip", IPV6, MASK_A_IPV6),
        (KEY_A, "device_id", DEVICE_ID, MASK_A_DEVICE),
        (KEY_B, "ip", IP, MASK_B_IP),
    ],
    ids=["a-ip", "a-ipv6", "a-device_id", "b-ip"],
)
def test_known_masks(key: bytes, field: str, value: str, stored: str) -> None:
    assert Masker(key).mask(field, value) == stored
    assert Masker(key).unmask(field, stored) == value
    assert _kat_unmask(key, field, stored) == value


def test_known_masks_after_a_rotation() -> None:
    rotated = Masker(KEY_B, old=[KEY_A])
    assert rotated.unmask("ip", MASK_A_IP) == IP
    assert rotated.unmask("device_id", MASK_A_DEVICE) == DEVICE_ID
    assert rotated.is_current(MASK_B_IP) and not rotated.is_current(MASK_A_IP)
    with pytest.raises(UnknownMaskError):
        Masker(KEY_B).unmask("ip", MASK_A_IP)
    with pytest.raises(UnknownMaskError):
        Masker(KEY_A).unmask("device_id", MASK_A_IP)  # bound to its column


def test_known_sealed_bodies_open() -> None:
    assert Masker(KEY_A).open_sealed(SEALED_A, BODY_ID) == BODY.encode()
    assert _kat_open(KEY_A, SEALED_A, BODY_ID) == BODY.encode()
    assert Masker(KEY_B, old=[KEY_A]).open_sealed(SEALED_A, BODY_ID) == BODY.encode()
    raw = Masker(KEY_A).open_sealed(SEALED_SURROGATE_A, SURROGATE_ID)
    assert raw == _kat_open(KEY_A, SEALED_SURROGATE_A, SURROGATE_ID)
    assert raw.decode("utf-8", "surrogatepass") == SURROGATE_BODY


def test_a_known_sealed_body_moved_to_another_message_does_not_open() -> None:
    with pytest.raises(MaskingError):
        Masker(KEY_A).open_sealed(SEALED_A, SURROGATE_ID)
    with pytest.raises(InvalidTag):
        _kat_open(KEY_A, SEALED_A, SURROGATE_ID)


def test_new_seals_use_the_known_construction() -> None:
    sealed = Masker(KEY_A).seal(BODY.encode(), BODY_ID)
    assert sealed.startswith(KEY_A_ID + ".")
    assert len(_kat_unb64url(sealed.partition(".")[2])) == 16 + 16 + len(BODY.encode())
    assert _kat_open(KEY_A, sealed, BODY_ID) == BODY.encode()


def test_a_tampered_stored_body_does_not_open() -> None:
    kid, _, payload = SEALED_A.partition(".")
    raw = bytearray(_kat_unb64url(payload))
    raw[3] ^= 1  # inside the nonce, which is bound as associated data
    tampered = f"{kid}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"
    with pytest.raises(MaskingError):
        Masker(KEY_A).open_sealed(tampered, BODY_ID)
