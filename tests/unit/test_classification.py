"""Which failures are retried, which reject one message, which stop the worker.

The decision is made at the PostgreSQL and SQS boundaries from the real
exception types of psycopg and botocore. Each row below says what should
happen, reasoned from what the failure means:

* retry  — the batch stays in hand (or in the queue) and is tried again;
* reject — this one row can never load: it becomes a rejection;
* fatal  — retrying cannot help; the operator must fix something.

The same table runs against a real server in tests/integration/test_sink_errors.py.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import psycopg
import pytest

from login_etl import postgres, sqs
from login_etl.errors import ConfigError, DatabaseError, SinkUnavailable, SourceUnavailable

# -- PostgreSQL ------------------------------------------------------------------

SQLSTATES = [
    # connection exceptions: a new connection may succeed
    ("08006", "retry"),  # connection_failure
    ("08001", "retry"),  # sqlclient_unable_to_establish_sqlconnection
    ("08003", "retry"),  # connection_does_not_exist
    # transaction rollbacks: run the same batch again
    ("40P01", "retry"),  # deadlock_detected
    ("40001", "retry"),  # serialization_failure
    # operator intervention, resources
    ("57P01", "retry"),  # admin_shutdown (a restart)
    ("57P02", "retry"),  # crash_shutdown
    ("57P03", "retry"),  # cannot_connect_now (still starting up)
    ("57014", "retry"),  # query_canceled (statement_timeout)
    ("53300", "retry"),  # too_many_connections
    ("53100", "retry"),  # disk_full: held until space is freed, never dropped
    ("58030", "retry"),  # io_error
    ("55P03", "retry"),  # lock_not_available (lock_timeout)
    ("25006", "retry"),  # read_only_sql_transaction: a failover left us on a standby
    # the data itself: reject the row, load the rest
    ("22001", "reject"),  # string_data_right_truncation
    ("22P02", "reject"),  # invalid_text_representation
    ("22003", "reject"),  # numeric_value_out_of_range
    ("22021", "reject"),  # character_not_in_repertoire
    ("23505", "reject"),  # unique_violation (a unique index on user_logins)
    ("23502", "reject"),  # not_null_violation
    ("23514", "reject"),  # check_violation
    ("P0001", "reject"),  # raise_exception (a trigger refused the row)
    # only the operator can fix these
    ("42P01", "fatal"),  # undefined_table
    ("42501", "fatal"),  # insufficient_privilege
    ("42703", "fatal"),  # undefined_column (user_logins altered)
    ("28P01", "fatal"),  # invalid_password
    ("28000", "fatal"),  # invalid_authorization_specification
    ("3D000", "fatal"),  # invalid_catalog_name (no such database)
    ("0A000", "fatal"),  # feature_not_supported
    ("XX000", "fatal"),  # internal_error
]
# What the operator must fix is told as a ConfigError; other fatal errors are not.
CONFIG_STATES = {"42P01", "42501", "28P01", "28000", "3D000"}


def pg_error(sqlstate: str) -> psycopg.Error:
    """The exception psycopg raises for a server error with this SQLSTATE."""
    cls = psycopg.errors.lookup(sqlstate)
    exc = cls(f"server said no ({sqlstate})")
    assert exc.sqlstate == sqlstate
    return exc


def pg_outcome(exc: psycopg.Error) -> str:
    transient, row = postgres.is_transient(exc), postgres.is_row_error(exc)
    assert not (transient and row), "an error is either retried or rejected, never both"
    return "retry" if transient else "reject" if row else "fatal"


@pytest.mark.parametrize(("sqlstate", "expected"), SQLSTATES)
def test_sqlstate_classification(sqlstate: str, expected: str) -> None:
    exc = pg_error(sqlstate)
    assert pg_outcome(exc) == expected
    problem = postgres.config_problem(exc)
    if sqlstate in CONFIG_STATES:
        assert problem is not None and "\n" not in problem
    else:
        assert problem is None
    # Outside a batch (admin sessions, status), one translation for every error.
    translated = postgres.translate(exc)
    if expected == "retry":
        assert isinstance(translated, SinkUnavailable)
    elif sqlstate in CONFIG_STATES:
        assert isinstance(translated, ConfigError)
    else:
        assert isinstance(translated, DatabaseError)


def test_every_sqlstate_class_in_the_table_is_known_to_psycopg() -> None:
    for sqlstate, _ in SQLSTATES:
        assert psycopg.errors.lookup(sqlstate).sqlstate == sqlstate


# Connection failures: libpq gives no SQLSTATE, only the message (as psycopg
# raises it when `connect` fails).
CONNECT_FAILURES = [
    ("Connection refused\n\tIs the server running on that host", "retry"),
    ("server closed the connection unexpectedly", "retry"),
    ("timeout expired", "retry"),
    ('could not translate host name "db" to address: Name or service not known', "retry"),
    ("FATAL:  the database system is starting up", "retry"),
    ("FATAL:  sorry, too many clients already", "retry"),
    ("FATAL:  terminating connection due to administrator command", "retry"),
    ('FATAL:  password authentication failed for user "etl"', "fatal"),
    ('FATAL:  database "logins" does not exist', "fatal"),
    ('FATAL:  role "etl" does not exist', "fatal"),
    ('FATAL:  role "etl" is not permitted to log in', "fatal"),
    ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "etl", database "x"', "fatal"),
    ('FATAL:  permission denied for database "logins"', "fatal"),
    ("fe_sendauth: no password supplied", "fatal"),
]


def connect_error(detail: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(
        f'connection failed: connection to server at "127.0.0.1", port 5432 failed: {detail}'
    )


@pytest.mark.parametrize(("detail", "expected"), CONNECT_FAILURES)
def test_connect_failure_classification(
    detail: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exc = connect_error(detail)
    assert exc.sqlstate is None
    assert pg_outcome(exc) == expected

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise exc

    monkeypatch.setattr(psycopg, "connect", refuse)
    want = SinkUnavailable if expected == "retry" else ConfigError
    with pytest.raises(want) as info:
        postgres.connect("postgresql://etl@127.0.0.1/logins")
    assert info.value.__cause__ is exc
    assert len(str(info.value).splitlines()) == 1


def test_interface_error_without_sqlstate_is_transient() -> None:
    assert postgres.is_transient(psycopg.InterfaceError("the connection is closed"))


def test_non_psycopg_errors_are_not_transient() -> None:
    assert not postgres.is_transient(ValueError("x"))
    assert not postgres.is_transient(OSError("x"))


# -- SQS -------------------------------------------------------------------------

CLIENT_ERRORS = [
    # throttled or failing on AWS's side: retry (under the worker's policy: botocore tries once)
    ("Throttling", 400, "retry"),
    ("ThrottlingException", 400, "retry"),
    ("RequestThrottled", 403, "retry"),
    ("RequestThrottledException", 400, "retry"),
    ("KmsThrottled", 400, "retry"),
    ("ServiceUnavailable", 503, "retry"),
    ("InternalError", 500, "retry"),
    ("InternalFailure", 500, "retry"),
    ("500", 500, "retry"),  # an error body botocore could not parse
    ("503", 503, "retry"),
    ("", 500, "retry"),
    ("", 503, "retry"),
    ("OverLimit", 403, "retry"),  # too many messages in flight: wait for some to finish
    # Refreshable credentials (IRSA, instance and container roles) renew on the
    # next signed call; a retry is what lets them.
    ("ExpiredToken", 400, "retry"),
    ("ExpiredTokenException", 400, "retry"),
    # wrong credentials, policy or queue: only the operator can fix these
    ("AccessDenied", 403, "fatal"),
    ("AccessDeniedException", 400, "fatal"),
    ("InvalidClientTokenId", 403, "fatal"),
    ("UnrecognizedClientException", 400, "fatal"),
    ("SignatureDoesNotMatch", 403, "fatal"),
    ("InvalidAddress", 404, "fatal"),
    ("NonExistentQueue", 400, "fatal"),
    ("AWS.SimpleQueueService.NonExistentQueue", 400, "fatal"),
    ("QueueDoesNotExist", 400, "fatal"),
]


def client_error(code: str, status: int, operation: str = "ReceiveMessage") -> Exception:
    response: Any = {
        "Error": {"Code": code, "Message": f"{code} happened"} if code else {},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "r-1"},
    }
    return botocore.exceptions.ClientError(response, operation)


def sqs_outcome(exc: Exception) -> tuple[str, Exception]:
    try:
        with sqs.translated("receive"):
            raise exc
    except SourceUnavailable as out:
        return "retry", out
    except ConfigError as out:
        return "fatal", out
    raise AssertionError("translated() let the error through untranslated")


@pytest.mark.parametrize(("code", "status", "expected"), CLIENT_ERRORS)
def test_client_error_classification(code: str, status: int, expected: str) -> None:
    exc = client_error(code, status)
    outcome, translated = sqs_outcome(exc)
    assert outcome == expected
    assert translated.__cause__ is exc
    assert len(str(translated).splitlines()) == 1
    if code:
        assert code in str(translated)


BOTOCORE_ERRORS = [
    (botocore.exceptions.EndpointConnectionError(endpoint_url="https://sqs"), "retry"),
    (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://sqs"), "retry"),
    (botocore.exceptions.ReadTimeoutError(endpoint_url="https://sqs"), "retry"),
    (botocore.exceptions.ConnectionClosedError(endpoint_url="https://sqs"), "retry"),
    (botocore.exceptions.NoCredentialsError(), "fatal"),
    (
        botocore.exceptions.PartialCredentialsError(
            provider="env", cred_var="AWS_SECRET_ACCESS_KEY"
        ),
        "fatal",
    ),
]


@pytest.mark.parametrize(
    ("exc", "expected"), BOTOCORE_ERRORS, ids=[type(e).__name__ for e, _ in BOTOCORE_ERRORS]
)
def test_botocore_error_classification(exc: Exception, expected: str) -> None:
    outcome, translated = sqs_outcome(exc)
    assert outcome == expected
    assert translated.__cause__ is exc


def test_unrelated_errors_pass_through() -> None:
    with pytest.raises(KeyError), sqs.translated("receive"):
        raise KeyError("not ours to translate")


def test_an_answer_botocore_cannot_read_is_retried() -> None:
    """moto 4's query server garbles a visibility batch holding a deleted receipt; the
    heartbeat's next round (without that receipt) must get its chance."""
    import botocore.parsers

    kind, out = sqs_outcome(botocore.parsers.ResponseParserError("Unable to parse response"))
    assert kind == "retry"
    assert "could not be read" in str(out)
