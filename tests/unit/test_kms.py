"""kms.py at its boundary with botocore: the context it binds, and how KMS errors translate.

The integration tests run against moto's KMS, which neither denies a call
nor throttles; botocore's Stubber answers here as AWS would.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from click.testing import CliRunner

from login_etl import kms
from login_etl.cli import cli
from login_etl.errors import ConfigError, KeyServiceUnavailable
from login_etl.retry import Retrier
from tests.unit.helpers import KEY_A

# A known answer: every stored kms: key was made under this context, and KMS
# decrypts it only under the same one. A release that changed it would lock
# every deployment out of its own keys.
CONTEXT = {"app": "login-etl", "purpose": "masking-key"}
BLOB = bytes(range(150))
WRAPPED = "kms:" + base64.b64encode(BLOB).decode("ascii")


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client(
        "kms",
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def test_a_new_data_key_is_bound_to_the_masking_key_context(stubbed) -> None:
    client, stub = stubbed
    stub.add_response(
        "generate_data_key",
        {"CiphertextBlob": BLOB, "Plaintext": KEY_A, "KeyId": "alias/etl"},
        expected_params={"KeyId": "alias/etl", "NumberOfBytes": 64, "EncryptionContext": CONTEXT},
    )
    assert kms.new_data_key("alias/etl", client=client) == WRAPPED


def test_a_wrapped_key_is_decrypted_under_the_masking_key_context(stubbed) -> None:
    client, stub = stubbed
    stub.add_response(
        "decrypt",
        {"Plaintext": KEY_A, "KeyId": "alias/etl"},
        expected_params={"CiphertextBlob": BLOB, "EncryptionContext": CONTEXT},
    )
    assert kms.decrypt_key(f"  {WRAPPED}\n", name="LOGIN_ETL_MASKING_KEY", client=client) == KEY_A


@pytest.mark.parametrize(
    "code",
    ["AccessDeniedException", "DisabledException", "NotFoundException", "IncorrectKeyException"],
)
def test_what_an_operator_must_fix_fails_at_once_as_a_config_error(stubbed, code: str) -> None:
    # A role without kms:Decrypt gets the same answer on every try: retrying it for
    # --max-retry-time would only delay the one line that says so (exit 2).
    client, stub = stubbed
    stub.add_client_error("decrypt", service_error_code=code, http_status_code=400)
    retried: list[str] = []
    # A clock 1,000 s on at every look: a retryable error would give up at once too.
    ticks = itertools.count(step=1000)
    retrier = Retrier(300.0, on_retry=retried.append, clock=lambda: next(ticks))
    with pytest.raises(
        ConfigError, match=f"^LOGIN_ETL_MASKING_KEY: Decrypt: KMS refused \\({code}\\)$"
    ):
        retrier.call(
            "kms", lambda: kms.decrypt_key(WRAPPED, name="LOGIN_ETL_MASKING_KEY", client=client)
        )
    assert retried == []


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "KMSInternalException", "DependencyTimeoutException"]
)
def test_a_throttled_or_failing_kms_is_retryable(stubbed, code: str) -> None:
    client, stub = stubbed
    stub.add_client_error("decrypt", service_error_code=code, http_status_code=500)
    with pytest.raises(KeyServiceUnavailable, match=f"KMS failed \\({code}\\)"):
        kms.decrypt_key(WRAPPED, name="LOGIN_ETL_MASKING_KEY", client=client)


def test_keygen_without_kms_permission_is_one_line_and_exit_2(stubbed, monkeypatch) -> None:
    client, stub = stubbed
    stub.add_client_error(
        "generate_data_key", service_error_code="AccessDeniedException", http_status_code=400
    )
    monkeypatch.setattr(kms, "make_client", lambda: client)
    result = CliRunner().invoke(cli, ["keygen", "--kms-key-id", "alias/etl"], prog_name="login-etl")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "login-etl: error: GenerateDataKey under alias/etl: KMS refused (AccessDeniedException)"
    ]
