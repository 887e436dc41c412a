"""Keyed, deterministic, reversible masking of PII values (AES-SIV, RFC 5297).

A mask reads ``<key-id>.<base64url(ciphertext)>``. AES-SIV is deterministic:
the same value in the same column always gives the same mask under one key, so
``GROUP BY masked_ip`` still finds duplicates. The column name is bound in as
associated data, so the same value in ``ip`` and ``device_id`` masks
differently and a mask cannot be replayed into the other column. Only holders
of the key can recover the original, and unlike a hash of an IPv4 address
(2^32 candidates) it cannot be brute-forced.

Rejected message bodies are sealed with the same keys but with a random nonce
(`seal`/`open_sealed`): they are never compared, so they need not be
deterministic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from login_etl.errors import ConfigError, MaskingError, UnknownMaskError

KEY_BYTES = 64  # AES-SIV with a 512-bit key: AES-256 for both S2V and CTR.
MASK_MAX_CHARS = 256  # the varchar(256) of masked_ip / masked_device_id
_BODY_AD = b"login-etl:rejected-body"
_NONCE_BYTES = 16


def generate_key() -> str:
    """Return a new random 512-bit key, base64-encoded, for LOGIN_ETL_MASKING_KEY."""
    return base64.b64encode(AESSIV.generate_key(KEY_BYTES * 8)).decode("ascii")


def key_id(key: bytes) -> str:
    """Return the short public fingerprint that names `key` inside masks."""
    digest = hashlib.sha256(b"login-etl key id\x00" + key).digest()
    return base64.b32encode(digest[:5]).decode("ascii").lower()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{name} must decode to {KEY_BYTES} bytes (512 bits), got {len(raw)}; "
            "make one with `login-etl keygen`"
        )
    return raw


class _Key:
    __slots__ = ("id", "siv")

    def __init__(self, raw: bytes) -> None:
        self.id = key_id(raw)
        self.siv = AESSIV(raw)


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

    def mask(self, field: str, value: str) -> str:
        """Return the deterministic mask of `value` for column `field`."""
        data = value.encode("utf-8")
        ciphertext = self._primary.siv.encrypt(data, [field.encode("ascii")])
        return f"{self._primary.id}.{_b64url(ciphertext)}"

    def unmask(self, field: str, mask: str) -> str:
        """Recover the original value of `mask` for column `field`.

        Raises UnknownMaskError when no known key made it for this field.
        """
        kid, _, payload = mask.strip().partition(".")
        key = self._keys.get(kid)
        if key is None or not payload:
            raise UnknownMaskError(f"mask was not made by a known key (key id {kid[:16]!r})")
        try:
            plain = key.siv.decrypt(_unb64url(payload), [field.encode("ascii")])
        except (InvalidTag, ValueError, binascii.Error):
            raise UnknownMaskError(
                f"mask does not verify under key {kid!r} for field {field!r}"
            ) from None
        return plain.decode("utf-8")

    def is_current(self, mask: str) -> bool:
        """True when `mask` was made by the primary key."""
        return mask.startswith(self._primary.id + ".")

    def seal(self, data: bytes) -> str:
        """Encrypt `data` (a rejected body) with a random nonce; not deterministic."""
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._primary.siv.encrypt(data, [_BODY_AD, nonce])
        return f"{self._primary.id}.{_b64url(nonce + ciphertext)}"

    def open_sealed(self, sealed: str) -> bytes:
        """Decrypt a value made by `seal` with any known key."""
        kid, _, payload = sealed.partition(".")
        key = self._keys.get(kid)
        if key is None:
            raise UnknownMaskError(f"body was sealed by an unknown key (key id {kid[:16]!r})")
        try:
            raw = _unb64url(payload)
            return key.siv.decrypt(raw[_NONCE_BYTES:], [_BODY_AD, raw[:_NONCE_BYTES]])
        except (InvalidTag, ValueError, binascii.Error):
            raise MaskingError("sealed body does not verify") from None
