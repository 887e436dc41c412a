"""Keyed, deterministic, reversible masking of PII values (AES-SIV, RFC 5297).

A mask reads ``<key-id>.<base64url(ciphertext)>``; the key id is a short
public fingerprint of the master key, so ``split_part(mask, '.', 1)`` tells
which key made a mask. From the one master key two subkeys are derived with
HKDF-SHA256, each for one use only:

* the **mask key** encrypts values deterministically: the same value in the
  same column always gives the same mask under one key, so ``GROUP BY
  masked_ip`` still finds duplicates. The column name is the associated data,
  so one value masks differently in ``ip`` and ``device_id`` and a mask cannot
  be moved to the other column. Before encryption the value is padded
  (ISO/IEC 7816-4: a 0x80 byte, then zeros) to the next multiple of 16 bytes,
  so a mask shows a length bucket, not a length: every IPv4 address (at most
  15 characters) gives a mask of one length.
* the **body key** seals rejected message bodies with a random nonce (they
  are never compared), with the message id as associated data, so a sealed
  body opens only in the row of the message it came from.

Only holders of the master key can recover values, and unlike a hash of an
IPv4 address (2^32 candidates) a mask cannot be brute-forced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from login_etl.errors import ConfigError, MaskingError, UnknownMaskError

KEY_BYTES = 64  # AES-SIV with a 512-bit key: AES-256 for both S2V and CTR.
MASK_MAX_CHARS = 256  # the varchar(256) of masked_ip / masked_device_id
BUCKET_BYTES = 16  # masks reveal the value's length only to this granularity
MASK_INFO = b"login-etl v2 mask key"  # HKDF info: one subkey per use
BODY_INFO = b"login-etl v2 sealed-body key"
_BODY_AD = b"login-etl:rejected-body"
_NONCE_BYTES = 16
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[a-z2-7]{8}")
_FIELD_AD = {name: [name.encode()] for name in ("ip", "device_id")}  # associated data, made once
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def generate_key() -> str:
    """Return a new random 512-bit key, base64-encoded, for LOGIN_ETL_MASKING_KEY."""
    return base64.b64encode(AESSIV.generate_key(KEY_BYTES * 8)).decode("ascii")


def key_id(key: bytes) -> str:
    """Return the short public fingerprint that names `key` inside masks."""
    digest = hashlib.sha256(b"login-etl key id\x00" + key).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()


def derive(key: bytes, info: bytes) -> bytes:
    """The 512-bit subkey of master `key` for the use named by `info` (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


# The padding for each length modulo 16, made once: masking is on the hot path.
_PADDING = tuple(b"\x80" + b"\x00" * (-(n + 1) % BUCKET_BYTES) for n in range(BUCKET_BYTES))


def pad(data: bytes) -> bytes:
    """`data` + 0x80 + zeros up to the next multiple of `BUCKET_BYTES` (never empty)."""
    return data + _PADDING[len(data) % BUCKET_BYTES]


def unpad(padded: bytes) -> bytes:
    """Inverse of `pad`; ValueError unless `padded` is exactly what `pad` makes."""
    data = padded.rstrip(b"\x00")
    if not data or data[-1] != 0x80 or len(padded) % BUCKET_BYTES or pad(data[:-1]) != padded:
        raise ValueError("bad padding")
    return data[:-1]


def b64url(data: bytes) -> str:
    """Unpadded base64url, the encoding of every mask and sealed body."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode canonical unpadded base64url; ValueError for any other spelling.

    Only one spelling of each byte string is accepted (no padding, no stray
    characters, no unused bits set), so two different texts never name the
    same mask.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not canonical base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def decode_key(text: str, *, name: str = "LOGIN_ETL_MASKING_KEY") -> bytes:
    """Decode a base64 (standard or URL-safe) 512-bit key; raise ConfigError if invalid.

    The error names the setting, never the value.
    """
    cleaned = text.strip()
    if not cleaned:
        raise ConfigError(f"{name} is empty; make one with `login-etl keygen`")
    try:
        padded = cleaned + "=" * (-len(cleaned) % 4)
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name} is not valid base64") from None
    return check_key(raw, name=name)


# A key with fewer distinct byte values than this (or fewer distinct steps from
# one byte to the next) is not random: 64 random bytes hold about 57 distinct
# values, and fewer than 32 happens with probability below 2^-65, for the
# steps too. Constants, short repeated patterns, hex or word text decoded as a
# key, and counting sequences all fall far below it.
MIN_DISTINCT_BYTES = 32


def check_key(raw: bytes, *, name: str) -> bytes:
    """`raw` if it is a 512-bit key that looks random, else a ConfigError naming the setting.

    The error never shows the key.
    """
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{name} must decode to {KEY_BYTES} bytes (512 bits), got {len(raw)}; "
            "make one with `login-etl keygen`"
        )
    steps = bytes((b - a) % 256 for a, b in zip(raw, raw[1:], strict=False))
    if len(set(raw)) < MIN_DISTINCT_BYTES or len(set(steps)) < MIN_DISTINCT_BYTES:
        raise ConfigError(
            f"{name} is not a random key (too few distinct bytes, or a repeating or counting "
            "pattern); make one with `login-etl keygen`"
        )
    return raw


class _Key:
    __slots__ = ("body", "id", "mask")

    def __init__(self, raw: bytes) -> None:
        self.id = key_id(raw)
        self.mask = AESSIV(derive(raw, MASK_INFO))
        self.body = AESSIV(derive(raw, BODY_INFO))


class Masker:
    """Masks and unmasks values with a primary key and older, decrypt-only keys.

    Keys are never shown by ``repr`` or ``str``.
    """

    def __init__(self, primary: bytes, old: Iterable[bytes] = ()) -> None:
        self._primary = _Key(primary)
        self._keys = {self._primary.id: self._primary}
        for raw in old:
            k = _Key(raw)
            self._keys.setdefault(k.id, k)

    def __repr__(self) -> str:
        return f"Masker(key_id={self._primary.id!r}, old_key_ids={self.old_key_ids!r})"

    @property
    def key_id(self) -> str:
        """Fingerprint of the primary key (the one new masks are made with)."""
        return self._primary.id

    @property
    def old_key_ids(self) -> list[str]:
        """Fingerprints of the decrypt-only keys."""
        return [k for k in self._keys if k != self._primary.id]

    @property
    def key_ids(self) -> list[str]:
        """Fingerprints of every configured key, the primary first."""
        return list(self._keys)

    def mask(self, field: str, value: str) -> str:
        """Return the deterministic mask of `value` for column `field`."""
        ad = _FIELD_AD.get(field) or [field.encode()]
        ciphertext = self._primary.mask.encrypt(pad(value.encode("utf-8")), ad)
        return f"{self._primary.id}.{b64url(ciphertext)}"

    def unmask(self, field: str, mask: str) -> str:
        """Recover the original value of `mask` for column `field`.

        Surrounding whitespace is ignored; otherwise only the exact text a
        mask is made of is accepted. Raises UnknownMaskError when no known
        key made it for this field.
        """
        kid, _, payload = mask.strip().partition(".")
        key = self._keys.get(kid)
        if key is None or not payload:
            shown = kid[:16] if _KEY_ID.fullmatch(kid) else "not a key id"
            raise UnknownMaskError(f"mask was not made by a known key (key id {shown!r})")
        try:
            raw = unb64url(payload)
            plain = unpad(key.mask.decrypt(raw, [field.encode()]))
            return plain.decode("utf-8")
        except (InvalidTag, ValueError):  # UnicodeDecodeError is a ValueError
            raise UnknownMaskError(
                f"mask does not verify under key {kid!r} for field {field!r}"
            ) from None

    def is_current(self, mask: str) -> bool:
        """True when `mask` was made by the primary key."""
        return mask.startswith(self._primary.id + ".")

    def seal(self, data: bytes, message_id: str) -> str:
        """Encrypt `data` (the body of message `message_id`) with a random nonce."""
        # A nonce is stored beside its ciphertext: unpredictable and unrepeated is all it
        # needs (AES-SIV stays safe even if one repeats). Rejections are rare: no pool.
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._primary.body.encrypt(data, _body_ad(message_id, nonce))
        return f"{self._primary.id}.{b64url(nonce + ciphertext)}"

    def open_sealed(self, sealed: str, message_id: str) -> bytes:
        """Decrypt a value `seal` made for `message_id`, with any known key."""
        kid, _, payload = sealed.partition(".")
        key = self._keys.get(kid)
        if key is None:
            shown = kid[:16] if _KEY_ID.fullmatch(kid) else "not a key id"
            raise UnknownMaskError(f"body was sealed by an unknown key (key id {shown!r})")
        try:
            raw = unb64url(payload)
            if len(raw) < _NONCE_BYTES + _TAG_BYTES:
                raise ValueError("too short")
            nonce = raw[:_NONCE_BYTES]
            return key.body.decrypt(raw[_NONCE_BYTES:], _body_ad(message_id, nonce))
        except (InvalidTag, ValueError):
            raise MaskingError(
                "sealed body does not verify (tampered, or moved from another message)"
            ) from None


def _body_ad(message_id: str, nonce: bytes) -> list[bytes]:
    return [_BODY_AD, message_id.encode("utf-8", "surrogatepass"), nonce]
