"""Secrets from the environment, and the masker from the key settings.

A secret setting comes from its variable or from the file that
``<VARIABLE>_FILE`` names (Docker and Kubernetes secrets); a masking key is
base64 text or ``kms:<base64 CiphertextBlob>``, which AWS KMS decrypts.
`config.Settings` reads its secrets through these functions, and the Lambda
handler (`aws_lambda`) reads its three settings with them directly: this
module imports neither click nor, until a ``kms:`` key needs it, boto3, so a
handler's cold start pays for neither.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Mapping

from login_etl import redact
from login_etl.errors import ConfigError
from login_etl.masking import Masker, check_key, decode_key


def from_env(
    variable: str, env: Mapping[str, str], notes: list[str], *, secret: bool
) -> tuple[str | None, str]:
    """The value of `variable` and where it came from; a secret may come from ``<VAR>_FILE``."""
    value = env.get(variable)
    path = env.get(variable + "_FILE") if secret else None
    if path and value is not None:
        raise ConfigError(f"set {variable} or {variable}_FILE, not both")
    if not path:
        return value, variable
    return read_secret_file(variable + "_FILE", path, notes), variable + "_FILE"


# Said the same in the warning and in docs/security.md: what holds on a plain
# host, under compose (the image runs as uid 10001) and in Kubernetes.
KEY_FILE_ADVICE = (
    "make it readable by the worker's user only: `chown USER FILE && chmod 0400 FILE` "
    "(compose bind-mounts it for the image's uid 10001: `chown 10001`); in Kubernetes, "
    "the secret volume's defaultMode: 0400 with the pod's fsGroup"
)


def read_secret_file(name: str, path: str, notes: list[str]) -> str:
    """The stripped text of the secret file `path`; a world-readable one adds a note."""
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8 text") from None
    # Group-readable is normal for Kubernetes secret volumes (fsGroup); world is not.
    if mode & stat.S_IROTH:
        notes.append(f"{name}: {path} is readable by every user; {KEY_FILE_ADVICE}")
    return text.strip()


def register(database_url: str, masking_key: str | None, masking_old_keys: str) -> None:
    """Have `redact` hide these settings (and the URL's password) from every output."""
    import psycopg  # not at import: `login-etl --help` needs no database driver
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = str(conninfo_to_dict(database_url).get("password") or "") or None
    except psycopg.Error:  # a malformed URL is reported later, without quoting it
        password = None
    redact.register(database_url, masking_key, password)
    redact.register(*masking_old_keys.split(","))


def masker(masking_key: str | None, masking_old_keys: str) -> Masker:
    """The masker built from the key settings, or a ConfigError.

    A key written ``kms:<base64 CiphertextBlob>`` is decrypted by AWS KMS
    here; the key it yields is registered with `redact` at once.
    """
    if not masking_key:
        raise ConfigError(
            "no masking key: set LOGIN_ETL_MASKING_KEY or LOGIN_ETL_MASKING_KEY_FILE "
            "(make one with `login-etl keygen`)"
        )
    primary = read_key(masking_key, "LOGIN_ETL_MASKING_KEY")
    old = [
        read_key(k, f"LOGIN_ETL_MASKING_OLD_KEYS[{i}]")
        for i, k in enumerate(masking_old_keys.split(","))
        if k.strip()
    ]
    return Masker(primary, old)


def read_key(text: str, name: str) -> bytes:
    """A 512-bit key from its base64 text, or from KMS for the ``kms:`` form."""
    from login_etl import kms  # boto3 only for a key that needs it

    if not kms.is_kms(text):
        return decode_key(text, name=name)
    raw = check_key(kms.decrypt_key(text, name=name), name=name)
    redact.register(
        base64.b64encode(raw).decode("ascii"),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    )
    return raw
