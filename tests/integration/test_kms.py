"""Masking keys held by KMS, against moto's KMS over HTTP (the SQS endpoint's port).

The plaintext key is obtained here only by calling KMS directly, to check
what the service did with it; the service itself never prints it.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import boto3
import pytest

from login_etl.dev.local import free_port
from login_etl.masking import Masker, generate_key, key_id

from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import event, query, send

WHY = ("--purpose", "kms check")
# Written out, not imported: keys made by earlier releases carry this context.
ENCRYPTION_CONTEXT = {"app": "login-etl", "purpose": "masking-key"}


@pytest.fixture
def kms_client(aws_env: dict[str, str]) -> Any:
    return boto3.client("kms")


@pytest.fixture
def kms_key(kms_client) -> str:
    return kms_client.create_key(Description="login-etl test")["KeyMetadata"]["KeyId"]


def keygen(env: dict[str, str], kms_key: str) -> str:
    done = cli(env, "keygen", "--kms-key-id", kms_key)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kms:")
    return lines[0]


def plaintext_of(kms_client, wrapped: str) -> bytes:
    """What KMS decrypts the key to, asked directly."""
    blob = base64.b64decode(wrapped.removeprefix("kms:"), validate=True)
    answer = kms_client.decrypt(CiphertextBlob=blob, EncryptionContext=ENCRYPTION_CONTEXT)
    return bytes(answer["Plaintext"])


def secret_spellings(raw: bytes) -> list[str]:
    return [
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        base64.b64encode(raw).decode()[:24],
    ]


def test_keygen_prints_only_the_wrapped_key(etl_env, kms_client, kms_key) -> None:
    first, second = keygen(etl_env.vars(), kms_key), keygen(etl_env.vars(), kms_key)
    assert first != second
    raw = plaintext_of(kms_client, first)
    assert len(raw) == 64
    done = cli(etl_env.vars(), "keygen", "--kms-key-id", kms_key)
    for text in (first, done.stdout + done.stderr):
        for spelling in secret_spellings(raw):
            assert spelling not in text
    # Bound to its encryption context: KMS refuses it for any other use.
    blob = base64.b64decode(first.removeprefix("kms:"))
    with pytest.raises(kms_client.exceptions.InvalidCiphertextException):
        kms_client.decrypt(CiphertextBlob=blob)


def test_a_kms_key_masks_loads_and_unmasks_and_never_shows_its_plaintext(
    etl_env, sqs_client, kms_client, kms_key, tmp_path
) -> None:
    wrapped = keygen(etl_env.vars(), kms_key)
    raw = plaintext_of(kms_client, wrapped)
    path = tmp_path / "masking-key"
    path.write_text(wrapped + "\n")
    path.chmod(0o600)
    env = {k: v for k, v in etl_env.vars().items() if k != "LOGIN_ETL_MASKING_KEY"}
    env.update(LOGIN_ETL_MASKING_KEY_FILE=str(path), LOGIN_ETL_LOG_LEVEL="debug")
    send(sqs_client, etl_env.queue_url, [event(1, ip="203.0.113.5"), "not json"])
    done = cli(env, "run", "--drain")
    assert done.returncode == 0, done.stderr
    masked_ip, masked_device = query(
        etl_env.database_url, "SELECT masked_ip, masked_device_id FROM user_logins"
    )[0]
    # Made by the key KMS holds: the id and the value follow from the plaintext.
    assert masked_ip.split(".")[0] == key_id(raw)
    assert Masker(raw).unmask("ip", masked_ip) == "203.0.113.5"
    unmasked = cli(env, "unmask", "--field", "ip", *WHY, masked_ip)
    assert (unmasked.returncode, unmasked.stdout) == (0, "203.0.113.5\n"), unmasked.stderr
    listed = cli(env, "rejects", "list", "--json", "--show-bodies", "--reveal-pii", *WHY)
    assert [r["body"] for r in json.loads(listed.stdout)["recent"]] == ["not json"]
    for output in (done, unmasked, listed):
        for spelling in secret_spellings(raw):
            assert spelling not in output.stdout + output.stderr
    assert masked_device.startswith(key_id(raw) + ".")


def test_rotation_from_a_plain_key_to_a_kms_key_with_rekey(
    etl_env, sqs_client, kms_client, kms_key
) -> None:
    send(sqs_client, etl_env.queue_url, [event(1, ip="203.0.113.6")])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    new = keygen(etl_env.vars(), kms_key)
    old_wrapped = keygen(etl_env.vars(), kms_key)  # an old key may be wrapped by KMS too
    rotated = etl_env.vars(
        LOGIN_ETL_MASKING_KEY=new, LOGIN_ETL_MASKING_OLD_KEYS=f"{old_wrapped},{etl_env.key}"
    )
    send(sqs_client, etl_env.queue_url, [event(2, ip="203.0.113.6")])
    assert cli(rotated, "run", "--drain").returncode == 0
    done = cli(rotated, "rekey")
    assert done.returncode == 0, done.stderr
    assert "rewrote 1 rows" in done.stdout
    raw = plaintext_of(kms_client, new)
    masks = {m for (m,) in query(etl_env.database_url, "SELECT masked_ip FROM user_logins")}
    assert masks == {Masker(raw).mask("ip", "203.0.113.6")}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("kms:", "no ciphertext after the prefix"),
        ("kms:%%%notbase64", "not valid base64"),
        ("kms:" + base64.b64encode(os.urandom(150)).decode(), "KMS refused"),
    ],
    ids=["empty", "not-base64", "not-a-blob"],
)
@pytest.mark.parametrize("where", ["LOGIN_ETL_MASKING_KEY", "LOGIN_ETL_MASKING_OLD_KEYS"])
def test_a_bad_wrapped_key_is_one_config_line(etl_env, value, fragment, where) -> None:
    env = etl_env.vars(**{where: value})
    done = cli(env, "run", "--drain")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("login-etl: error:"), done.stderr
    assert where in lines[0] and fragment in lines[0]
    if len(value) > 8:
        assert value[4:] not in done.stderr


def test_a_key_wrapped_without_the_context_is_refused(etl_env, kms_client, kms_key) -> None:
    blob = kms_client.encrypt(KeyId=kms_key, Plaintext=base64.b64decode(generate_key()))[
        "CiphertextBlob"
    ]
    env = etl_env.vars(LOGIN_ETL_MASKING_KEY="kms:" + base64.b64encode(blob).decode())
    done = cli(env, "rekey")
    assert done.returncode == 2
    assert "InvalidCiphertextException" in done.stderr


def test_a_wrapped_key_of_the_wrong_size_is_refused(etl_env, kms_client, kms_key) -> None:
    blob = kms_client.encrypt(
        KeyId=kms_key, Plaintext=os.urandom(32), EncryptionContext=ENCRYPTION_CONTEXT
    )["CiphertextBlob"]
    env = etl_env.vars(LOGIN_ETL_MASKING_KEY="kms:" + base64.b64encode(blob).decode())
    done = cli(env, "unmask", "--field", "ip", *WHY, "x.y")
    assert done.returncode == 2
    assert "32 bytes, not 64" in done.stderr


def test_kms_unreachable_is_retried_then_one_line(etl_env, kms_client, kms_key) -> None:
    wrapped = keygen(etl_env.vars(), kms_key)
    dead = f"http://127.0.0.1:{free_port()}"
    env = etl_env.vars(
        LOGIN_ETL_MASKING_KEY=wrapped, AWS_ENDPOINT_URL_KMS=dead, LOGIN_ETL_MAX_RETRY_TIME="3"
    )
    done = cli(env, "run", "--drain", timeout=90)
    assert done.returncode == 1, done.stderr
    assert "KMS" in done.stderr and "gave up after 3s" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("login-etl: error:")


def test_a_wrapped_key_with_no_entropy_is_refused(etl_env, kms_client, kms_key) -> None:
    # KMS wraps whatever it is given: the decrypted key is checked like any other.
    blob = kms_client.encrypt(
        KeyId=kms_key, Plaintext=bytes(64), EncryptionContext=ENCRYPTION_CONTEXT
    )["CiphertextBlob"]
    env = etl_env.vars(LOGIN_ETL_MASKING_OLD_KEYS="kms:" + base64.b64encode(blob).decode())
    done = cli(env, "unmask", "--field", "ip", *WHY, "x.y")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "LOGIN_ETL_MASKING_OLD_KEYS[0]" in line and "not a random key" in line
