"""Known answers: stored masks and sealed bodies must keep opening, byte for byte.

Every mask in `user_logins` and every sealed body in `user_logins_rejected`
was made by the code as it was on the day it was stored. A change to the
key-id salt, the associated data, the encoding or the nonce layout would
still round-trip in every other test, yet orphan all of that data. These
literals were made once and are never recomputed by the code under test.

When the stored format is changed on purpose (and a `rekey` path exists for
old data), regenerate the literals with::

    .venv/bin/python -c "
    from login_etl.masking import Masker, key_id
    a, b = bytes(range(64)), bytes(range(64, 128))
    print(key_id(a), key_id(b))
    print(Masker(a).mask('ip', '199.172.111.135'))
    print(Masker(a).mask('device_id', '593-47-5928'))
    print(Masker(b).mask('ip', '199.172.111.135'))
    print(Masker(a).seal(BODY.encode()))"

and update `_siv_mask` / `_siv_open` below to the new documented construction.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from login_etl.errors import MaskingError, UnknownMaskError
from login_etl.masking import Masker, key_id
from tests.unit.helpers import KEY_A, KEY_B

KEY_A_ID = "7jyit6td"
KEY_B_ID = "2qziraxf"
IP, DEVICE_ID = "199.172.111.135", "593-47-5928"
MASK_A_IP = "7jyit6td.sk6iSAkDv5Ng-mhp_tHJHlz77TCK8YapjM052OoVZg"
MASK_A_DEVICE = "7jyit6td.S4zBUzzBeg58ZpuUM41dnXgubt7t_o_YTyWl"
MASK_B_IP = "2qziraxf.ljyT3Mx-37h2DbuXe0vANcXCnRP9BEfGE68mDyB3_Q"
# A rejected body sealed under KEY_A (random nonce, so it was made once and stored).
BODY = '{"user_id": "u", "ip": "not json'
SEALED_A = (
    "7jyit6td.5LUu9DZkpi_ZsL45pB5hAI00aGIELbZC5Vg52wQ9sF-"
    "roMx4m4ihKTkUiZTJmKDBR34ukviDxKJuGFp5CU-1-Q"
)
# A body holding a lone surrogate (SQS accepts it, UTF-8 cannot encode it):
# sealed as UTF-8 with surrogatepass.
SURROGATE_BODY = "not json \ud800"
SEALED_SURROGATE_A = "7jyit6td.wde_S3PyAuyVt8TFYo_HCLeYWBBgZct7EWeh281cjiB4-DPr82KBUgK4df0"


# -- the documented construction, written out with `cryptography` alone --------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key_id(key: bytes) -> str:
    """First 40 bits of SHA-256("login-etl key id" NUL key), base32, lower case."""
    digest = hashlib.sha256(b"login-etl key id\x00" + key).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()


def _siv_mask(key: bytes, field: str, value: str) -> str:
    """AES-SIV(key), associated data = the column name, base64url unpadded, key id prefix."""
    ciphertext = AESSIV(key).encrypt(value.encode("utf-8"), [field.encode("ascii")])
    return f"{_key_id(key)}.{_b64url(ciphertext)}"


def _siv_open(key: bytes, sealed: str) -> bytes:
    """Sealed body: key id, '.', base64url(16-byte nonce + AES-SIV ciphertext), with
    associated data [b"login-etl:rejected-body", nonce]."""
    kid, _, payload = sealed.partition(".")
    assert kid == _key_id(key)
    raw = _unb64url(payload)
    return AESSIV(key).decrypt(raw[16:], [b"login-etl:rejected-body", raw[:16]])


# -- key ids ---------------------------------------------------------------------


def test_key_ids_are_the_stored_ones() -> None:
    assert (key_id(KEY_A), key_id(KEY_B)) == (KEY_A_ID, KEY_B_ID)
    assert (Masker(KEY_A).key_id, Masker(KEY_B).key_id) == (KEY_A_ID, KEY_B_ID)
    assert (_key_id(KEY_A), _key_id(KEY_B)) == (KEY_A_ID, KEY_B_ID)


# -- masks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "field", "value", "stored"),
    [
        (KEY_A, "ip", IP, MASK_A_IP),
        (KEY_A, "device_id", DEVICE_ID, MASK_A_DEVICE),
        (KEY_B, "ip", IP, MASK_B_IP),
    ],
    ids=["a-ip", "a-device_id", "b-ip"],
)
def test_mask_is_the_stored_one(key: bytes, field: str, value: str, stored: str) -> None:
    assert Masker(key).mask(field, value) == stored
    assert _siv_mask(key, field, value) == stored  # the construction DESIGN.md documents
    assert Masker(key).unmask(field, stored) == value


def test_stored_masks_open_after_a_rotation() -> None:
    rotated = Masker(KEY_B, old=[KEY_A])
    assert rotated.unmask("ip", MASK_A_IP) == IP
    assert rotated.unmask("device_id", MASK_A_DEVICE) == DEVICE_ID
    assert rotated.unmask("ip", MASK_B_IP) == IP
    assert rotated.is_current(MASK_B_IP) and not rotated.is_current(MASK_A_IP)
    with pytest.raises(UnknownMaskError):
        Masker(KEY_B).unmask("ip", MASK_A_IP)  # the old key retired: no longer readable


def test_a_stored_mask_is_bound_to_its_column() -> None:
    with pytest.raises(UnknownMaskError):
        Masker(KEY_A).unmask("device_id", MASK_A_IP)


# -- sealed bodies ---------------------------------------------------------------


def test_stored_sealed_body_still_opens() -> None:
    assert Masker(KEY_A).open_sealed(SEALED_A) == BODY.encode()
    assert _siv_open(KEY_A, SEALED_A) == BODY.encode()
    assert Masker(KEY_B, old=[KEY_A]).open_sealed(SEALED_A) == BODY.encode()


def test_stored_sealed_body_with_a_lone_surrogate_still_opens() -> None:
    raw = Masker(KEY_A).open_sealed(SEALED_SURROGATE_A)
    assert raw == _siv_open(KEY_A, SEALED_SURROGATE_A)
    assert raw.decode("utf-8", "surrogatepass") == SURROGATE_BODY


def test_new_seals_use_the_documented_construction() -> None:
    sealed = Masker(KEY_A).seal(BODY.encode())
    assert sealed.startswith(KEY_A_ID + ".")
    assert len(_unb64url(sealed.partition(".")[2])) == 16 + 16 + len(BODY.encode())
    assert _siv_open(KEY_A, sealed) == BODY.encode()


def test_a_tampered_stored_body_does_not_open() -> None:
    kid, _, payload = SEALED_A.partition(".")
    raw = bytearray(_unb64url(payload))
    raw[3] ^= 1  # inside the nonce, which is bound as associated data
    with pytest.raises(MaskingError):
        Masker(KEY_A).open_sealed(f"{kid}.{_b64url(bytes(raw))}")
