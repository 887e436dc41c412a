"""Masking keys held by AWS KMS: make a data key, decrypt it at start.

A key written ``kms:<base64 CiphertextBlob>`` is a 512-bit data key that KMS
encrypted under a KMS key (envelope encryption). Only KMS can turn it back
into the key, so a secret store, a manifest or a backup that leaks holds
nothing usable, and every decryption is logged by CloudTrail. A worker needs
``kms:Decrypt`` on that one KMS key.

Both calls bind the same encryption context, so a blob decrypts only as a
login-etl masking key (IAM conditions can require it too). boto3's standard
credential chain and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_KMS``)
apply; errors are translated here: what an operator must fix becomes
`ConfigError`, an unreachable or throttled KMS `KeyServiceUnavailable`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from login_etl.errors import ConfigError, KeyServiceUnavailable
from login_etl.masking import KEY_BYTES

PREFIX = "kms:"
# Bound to both GenerateDataKey and Decrypt (AES-GCM associated data inside KMS).
ENCRYPTION_CONTEXT = {"app": "login-etl", "purpose": "masking-key"}
# Answers that no retry can change: the blob, the key or the permissions are wrong.
_CONFIG_CODES = {
    "AccessDeniedException",
    "DisabledException",
    "IncorrectKeyException",
    "InvalidCiphertextException",
    "InvalidClientTokenId",
    "InvalidKeyUsageException",
    "KMSInvalidStateException",
    "NotFoundException",
    "UnrecognizedClientException",
    "ValidationException",
}


def is_kms(text: str) -> bool:
    """True when a key setting holds a KMS-encrypted data key."""
    return text.strip().startswith(PREFIX)


def make_client() -> Any:
    """A boto3 KMS client (standard chain, AWS_ENDPOINT_URL) with short timeouts."""
    # boto3 is imported here, not at the top: the config and a Lambda handler with a
    # plain key import this module without paying for it.
    import boto3
    import botocore.config
    import botocore.exceptions

    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10
    )
    try:
        return boto3.session.Session().client("kms", config=config)
    except botocore.exceptions.NoRegionError:
        raise ConfigError("KMS: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise ConfigError(f"KMS: cannot create the client: {type(exc).__name__}") from exc


@contextmanager
def _translated(action: str) -> Iterator[None]:
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        raise ConfigError("KMS: no AWS credentials found (standard boto3 chain)") from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "") or "unknown"
        if code in _CONFIG_CODES:
            raise ConfigError(f"{action}: KMS refused ({code})") from exc
        raise KeyServiceUnavailable(f"{action}: KMS failed ({code})") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise KeyServiceUnavailable(f"{action}: KMS unreachable ({type(exc).__name__})") from exc


def new_data_key(kms_key_id: str, *, client: Any = None) -> str:
    """Ask KMS for a new 512-bit data key under `kms_key_id`; return only its ``kms:`` form.

    The plaintext KMS returns alongside is dropped at once, never shown.
    """
    client = client or make_client()
    with _translated(f"GenerateDataKey under {kms_key_id}"):
        answer = client.generate_data_key(
            KeyId=kms_key_id, NumberOfBytes=KEY_BYTES, EncryptionContext=ENCRYPTION_CONTEXT
        )
    blob = answer["CiphertextBlob"]
    del answer
    return PREFIX + base64.b64encode(blob).decode("ascii")


def decrypt_key(text: str, *, name: str, client: Any = None) -> bytes:
    """The data key inside ``kms:<base64 CiphertextBlob>``, decrypted by KMS.

    Errors name the setting, never its value.
    """
    encoded = text.strip()[len(PREFIX) :].strip()
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: the ciphertext after the prefix is not valid base64") from None
    if not blob:
        raise ConfigError(f"{name}: no ciphertext after the prefix")
    client = client or make_client()
    with _translated(f"{name}: Decrypt"):
        answer = client.decrypt(CiphertextBlob=blob, EncryptionContext=ENCRYPTION_CONTEXT)
    plain: bytes = answer["Plaintext"]
    if len(plain) != KEY_BYTES:
        raise ConfigError(
            f"{name}: KMS decrypted it to {len(plain)} bytes, not {KEY_BYTES}; "
            "make one with `login-etl keygen --kms-key-id KEY`"
        )
    return plain
