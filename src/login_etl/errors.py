"""Exceptions raised by login-etl.

Every error the service raises derives from `LoginEtlError`. The split that
matters to the loop is *retryable* (try again later, the message stays in the
queue) versus everything else::

    LoginEtlError
    ├── ConfigError            bad settings: one line, exit 2
    ├── MaskingError
    │   └── UnknownMaskError   no known key made this mask
    ├── RetryableError         transient: back off and retry
    │   ├── SourceUnavailable  SQS unreachable, throttled or 5xx
    │   ├── SinkUnavailable    PostgreSQL unreachable or restarting
    │   ├── LakeUnavailable    the lake's warehouse or catalog failed, or a commit raced
    │   └── KeyServiceUnavailable  KMS unreachable, throttled or 5xx
    ├── RetryTimeExceeded      a retryable failure outlasted --max-retry-time
    ├── DatabaseError          PostgreSQL refused a statement (not transient, not config)
    └── LocalServiceError      an embedded demo/test service failed to start

Errors from boto3, psycopg and pyiceberg are translated into these at the source,
sink and lake boundaries (`raise ... from exc`), so the pipeline never imports either.
Messages never contain PII or key material.
"""

from __future__ import annotations


class LoginEtlError(Exception):
    """Root of all login-etl errors."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(LoginEtlError):
    """Invalid configuration."""


class MaskingError(LoginEtlError):
    """A value could not be masked or unmasked."""


class UnknownMaskError(MaskingError):
    """The mask was not made by any known key for this field."""


class RetryableError(LoginEtlError):
    """A transient failure: retry later; no message is lost."""


class SourceUnavailable(RetryableError):
    """The SQS endpoint could not be reached or refused the call."""


class SinkUnavailable(RetryableError):
    """The PostgreSQL server could not be reached or dropped the connection."""


class LakeUnavailable(RetryableError):
    """The lake's warehouse (files, S3) or catalog failed, or another commit won a race."""


class KeyServiceUnavailable(RetryableError):
    """AWS KMS could not be reached or failed while decrypting a masking key."""


class RetryTimeExceeded(LoginEtlError):
    """A retryable failure lasted longer than the configured maximum retry time."""


class DatabaseError(LoginEtlError):
    """PostgreSQL refused a statement for a reason retrying cannot fix."""


class LocalServiceError(LoginEtlError):
    """An embedded local service (PostgreSQL or SQS) could not be started."""
