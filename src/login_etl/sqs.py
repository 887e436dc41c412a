"""Amazon SQS through boto3: the real source.

boto3's standard credential chain and ``AWS_ENDPOINT_URL`` apply unchanged.
Each call is one try inside botocore, bounded by its timeouts: throttling,
5xx answers and timeouts are retried by the worker's own policy
(`login_etl.retry`, ``--max-retry-time``). Errors are translated into
`SourceUnavailable` (retryable) or `ConfigError` (the queue does not exist,
credentials are missing) here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers
import botocore.session

from login_etl.errors import ConfigError, SourceUnavailable
from login_etl.source import SQS_BATCH_MAX, Message, QueueDepth, QueueInfo
from login_etl.sqswire import QueryLoader, SqsClient

log = logging.getLogger(__name__)

# Seconds a call other than a long poll may take before it counts as failed.
CALL_TIMEOUT = 5.0
# A long poll answers after at most its wait: this much more means a hung endpoint.
POLL_SLACK = 10.0
# The shortest timeout a call bounded by a retry budget gets: even the last attempt
# before giving up should be able to succeed against a healthy endpoint.
MIN_CALL_TIMEOUT = 1
_REGION_IN_URL = re.compile(r"sqs[.-]([a-z0-9-]+)\.amazonaws\.com")
_MISSING_QUEUE = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "NonExistentQueue",
    "QueueDoesNotExist",
}
# Answers no retry can fix: the credentials or the policy are wrong. Every
# other code is retried under the worker's policy (throttling, 5xx).
# ExpiredToken is retried on purpose: the standard chain's credentials (IRSA,
# instance and container roles, SSO) refresh themselves, so the next call
# signs with new ones; static temporary keys that expired fail until
# --max-retry-time and are then reported.
_CONFIG_CODES = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidAddress",
    "SignatureDoesNotMatch",
}


def call_timeout_within(seconds: float) -> float:
    """botocore's connect and read timeouts for a call that must end within `seconds`.

    Whole seconds rounded up, so that a source keeps at most a few clients of
    shorter timeouts (one per value); never more than CALL_TIMEOUT nor less
    than MIN_CALL_TIMEOUT.
    """
    return float(max(MIN_CALL_TIMEOUT, min(CALL_TIMEOUT, math.ceil(seconds))))


def poll_timeout_within(wait: int, seconds: float) -> float:
    """The read timeout of a long poll of `wait` seconds that should end within `seconds`.

    Only the slack past the wait is cut (to whole seconds, at least
    MIN_CALL_TIMEOUT, at most POLL_SLACK): the poll itself still takes its wait.
    """
    slack = max(MIN_CALL_TIMEOUT, min(POLL_SLACK, math.ceil(seconds - wait)))
    return float(wait + slack)


def region_for(queue_url: str) -> str | None:
    """The region to use: AWS_REGION / AWS_DEFAULT_REGION, else the queue URL's."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(name):
            return os.environ[name]
    match = _REGION_IN_URL.search(queue_url)
    if match:
        return match.group(1)
    if os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_SQS"):
        return "us-east-1"  # local emulators accept any region
    return None


# One boto3 session per protocol and AWS_* environment: a session loads the service
# model, endpoints and partitions once, so a second client costs ~3 ms instead of
# ~60 ms. Sessions are not thread-safe to create or to build clients from
# (clients are), hence the lock. Keyed by the AWS_* variables so that a changed
# environment (the demo, tests) finds its credentials and profile again.
_SESSIONS: dict[tuple[str, frozenset[tuple[str, str]]], boto3.session.Session] = {}
_SESSIONS_LOCK = threading.Lock()
_SESSIONS_KEPT = 8


def _new_client(protocol: str, **kwargs: Any) -> Any:
    """A boto3 SQS client of `protocol` from the process's shared session."""
    aws_env = frozenset((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))
    with _SESSIONS_LOCK:
        session = _SESSIONS.get((protocol, aws_env))
        if session is None:
            core = botocore.session.Session()
            if protocol == "query":
                core.register_component("data_loader", QueryLoader())
            if len(_SESSIONS) >= _SESSIONS_KEPT:
                _SESSIONS.clear()
            session = _SESSIONS[protocol, aws_env] = boto3.session.Session(botocore_session=core)
        return session.client("sqs", **kwargs)


def make_client(
    queue_url: str,
    *,
    pool_size: int = 10,
    max_attempts: int = 1,
    read_timeout: float = CALL_TIMEOUT,
    protocol: str = "auto",
    **overrides: Any,
) -> SqsClient:
    """A boto3 SQS client with retries and a connection pool sized for our threads.

    Every call is bounded: `connect_timeout` CALL_TIMEOUT, `read_timeout` as
    given (a receive's must exceed its long-poll wait), and by default one try
    inside botocore (`max_attempts` counts every try): retries are the
    worker's own policy (``--max-retry-time``, jittered backoff), so a hung
    endpoint fails a call in seconds and the outage is measured the same way
    as every other.
    `protocol` is ``auto`` (found on first contact), ``json`` or ``query``
    (`login_etl.sqswire`).
    `overrides` (endpoint_url, region_name, credentials) replace what boto3's
    standard chain would find; the demo uses them to ignore the shell's AWS_*.
    """
    make = client_factory(
        queue_url,
        pool_size=pool_size,
        max_attempts=max_attempts,
        read_timeout=read_timeout,
        **overrides,
    )
    return SqsClient(make, protocol)


def client_factory(
    queue_url: str,
    *,
    pool_size: int = 10,
    max_attempts: int = 1,
    read_timeout: float = CALL_TIMEOUT,
    connect_timeout: float = CALL_TIMEOUT,
    **overrides: Any,
) -> Callable[[str], Any]:
    """What builds the boto3 client of one protocol (``json`` or ``query``), as `make_client`'s."""
    region = overrides.pop("region_name", None) or region_for(queue_url)
    if region is None:
        raise ConfigError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION)")
    config = botocore.config.Config(
        # total_max_attempts counts the first try; botocore reads `max_attempts` in a
        # Config as retries after it, so 1 there would mean two tries of a hung call.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )

    def make(protocol: str) -> Any:
        try:
            return _new_client(protocol, region_name=region, config=config, **overrides)
        except botocore.exceptions.BotoCoreError as exc:
            raise ConfigError(f"cannot create the SQS client: {exc}") from exc

    return make


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Turn boto3/botocore errors into login-etl errors."""
    try:
        yield
    except botocore.exceptions.NoCredentialsError as exc:
        raise ConfigError("no AWS credentials found (standard boto3 credential chain)") from exc
    except botocore.exceptions.PartialCredentialsError as exc:
        raise ConfigError(f"incomplete AWS credentials: {exc}") from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _MISSING_QUEUE:
            raise ConfigError(f"SQS queue does not exist ({code})") from exc
        if code in _CONFIG_CODES:
            raise ConfigError(f"SQS {action} failed: {code}") from exc
        raise SourceUnavailable(f"SQS {action} failed: {code or exc}") from exc
    except botocore.parsers.ResponseParserError as exc:
        # An answer botocore cannot read (moto 4's query server garbles a visibility
        # batch holding a receipt already deleted): retried like any outage.
        raise SourceUnavailable(f"SQS {action} failed: an answer that could not be read") from exc
    except botocore.exceptions.BotoCoreError as exc:
        # Connection errors carry the URL they could not reach: name it.
        url = getattr(exc, "kwargs", {}).get("endpoint_url")
        where = f": cannot reach {url} (check AWS_ENDPOINT_URL and the queue URL)" if url else ""
        raise SourceUnavailable(f"SQS {action} failed: {type(exc).__name__}{where}") from exc


_S = TypeVar("_S")


def chunks(items: Sequence[_S], size: int = SQS_BATCH_MAX) -> Iterator[Sequence[_S]]:
    """`items` in slices of at most `size` (SQS takes 10 entries per batch call)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _message(raw: dict[str, Any]) -> Message:
    attrs = raw.get("Attributes", {})
    sent_ms = int(attrs.get("SentTimestamp", "0") or 0)
    sent_at = datetime.fromtimestamp(sent_ms / 1000, UTC) if sent_ms else datetime.now(UTC)
    return Message(
        message_id=raw["MessageId"],
        receipt=raw["ReceiptHandle"],
        body=raw.get("Body", ""),
        sent_at=sent_at,
        receive_count=int(attrs.get("ApproximateReceiveCount", "1") or 1),
    )


class SqsSource:
    """Receives from, deletes from and extends messages on one SQS queue."""

    def __init__(
        self,
        queue_url: str,
        *,
        client: Any = None,
        pool_size: int = 10,
        max_wait: int = 20,
        protocol: str = "auto",
    ) -> None:
        self.queue_url = queue_url
        # Long polls get a client (and connections) of their own, so that deletes and
        # the heartbeat's extensions never queue behind a hung receive. The two share
        # the protocol the endpoint was found to speak.
        self.client = client or make_client(queue_url, pool_size=pool_size, protocol=protocol)
        self._receiver = client or self.client.sibling(
            client_factory(queue_url, pool_size=pool_size, read_timeout=max_wait + POLL_SLACK)
        )
        # Clients of shorter timeouts, by read timeout, for calls bounded by the time
        # left of a retry budget; none when the client was given.
        self._poll_timeout = max_wait + POLL_SLACK
        self._pool_size = pool_size
        self._bounded: dict[float, Any] | None = None if client else {}
        self._bounded_lock = threading.Lock()
        self._dlq: tuple[str | None, int | None] | None = None  # resolved once

    def __repr__(self) -> str:
        return f"SqsSource({self.queue_url!r})"

    def _within(self, timeout: float | None) -> Any:
        """The client for a call that must end within `timeout` seconds (None: as usual)."""
        read = CALL_TIMEOUT if timeout is None else call_timeout_within(timeout)
        return self._client_timing_out(read) if read < CALL_TIMEOUT else self.client

    def _receiver_within(self, wait: int, timeout: float | None) -> Any:
        """The client for a long poll of `wait` s that should end within `timeout` s."""
        read = self._poll_timeout if timeout is None else poll_timeout_within(wait, timeout)
        return self._client_timing_out(read) if read < self._poll_timeout else self._receiver

    def _client_timing_out(self, read: float) -> Any:
        """A client whose read timeout is `read` seconds, made once per value.

        botocore fixes a client's timeouts when it is made, so a shorter bound is
        a sibling client (same boto3 session, same protocol) of its own.
        """
        if self._bounded is None:  # a client given by the caller: its own timeouts
            return self.client
        with self._bounded_lock:
            client = self._bounded.get(read)
            if client is None:
                client = self._bounded[read] = self.client.sibling(
                    client_factory(
                        self.queue_url,
                        pool_size=self._pool_size,
                        read_timeout=read,
                        connect_timeout=min(read, CALL_TIMEOUT),
                    )
                )
        return client

    def receive(
        self, max_messages: int, wait_seconds: int, *, timeout: float | None = None
    ) -> list[Message]:
        """Long-poll for up to `max_messages` (≤ 10) messages.

        With `timeout`, the read timeout past the wait is cut to it (not the wait).
        """
        with translated("receive"):
            answer = self._receiver_within(wait_seconds, timeout).receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(max_messages, SQS_BATCH_MAX),
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
        return [_message(raw) for raw in answer.get("Messages", [])]

    def delete(self, messages: Sequence[Message], *, timeout: float | None = None) -> list[str]:
        """Batch-delete; return ids SQS did not delete (they will come back, and be skipped).

        With `timeout`, each call's timeouts are cut to it (`call_timeout_within`).
        """
        return self._batch("delete", "delete_message_batch", messages, {}, timeout)

    def change_visibility(
        self, messages: Sequence[Message], seconds: int, *, timeout: float | None = None
    ) -> list[str]:
        """Batch-change visibility; return ids that failed (e.g. already deleted)."""
        return self._batch(
            "change visibility",
            "change_message_visibility_batch",
            messages,
            {"VisibilityTimeout": seconds},
            timeout,
        )

    def _batch(
        self,
        action: str,
        method: str,
        messages: Sequence[Message],
        extra: dict[str, Any],
        timeout: float | None,
    ) -> list[str]:
        failed: list[str] = []
        client = self._within(timeout)
        for chunk in chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, **extra} for i, m in enumerate(chunk)
            ]
            with translated(action):
                answer = getattr(client, method)(QueueUrl=self.queue_url, Entries=entries)
            for entry in answer.get("Failed", []):
                failed.append(chunk[int(entry["Id"])].message_id)
        if failed:
            log.warning("SQS %s failed for %d message(s)", action, len(failed))
        return failed

    def _attributes(self, names: list[str], *, timeout: float | None = None) -> dict[str, str]:
        with translated("get attributes"):
            answer = self._within(timeout).get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=names
            )
        return dict(answer.get("Attributes", {}))

    def depth(self) -> QueueDepth:
        """Approximate visible, in-flight and delayed counts (one cheap call)."""
        attrs = self._attributes(
            [
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ]
        )
        return QueueDepth(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
        )

    def info(self, *, timeout: float | None = None) -> QueueInfo:
        """Queue depth and the settings that matter to delivery guarantees.

        The dead-letter queue's URL is looked up on the first call only. With
        `timeout`, each call's timeouts are cut to it (`call_timeout_within`).
        """
        attrs = self._attributes(["All"], timeout=timeout)
        if self._dlq is None:
            self._dlq = self._dead_letter(attrs.get("RedrivePolicy"), timeout=timeout)
        dlq_url, max_receives = self._dlq
        return QueueInfo(
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            visibility_timeout=int(attrs.get("VisibilityTimeout", 30)),
            retention_seconds=int(attrs.get("MessageRetentionPeriod", 345_600)),
            dlq_url=dlq_url,
            max_receive_count=max_receives,
        )

    def _dead_letter(
        self, redrive_policy: str | None, *, timeout: float | None = None
    ) -> tuple[str | None, int | None]:
        """(DLQ URL, maxReceiveCount) from a RedrivePolicy, or (None, None)."""
        if not redrive_policy:
            return None, None
        policy = json.loads(redrive_policy)
        max_receives = int(policy.get("maxReceiveCount", 0)) or None
        arn = policy.get("deadLetterTargetArn", "")
        if not arn:
            return None, max_receives
        name = arn.rsplit(":", 1)[-1]
        account = arn.split(":")[4] if arn.count(":") >= 5 else None
        kwargs = {"QueueOwnerAWSAccountId": account} if account else {}
        with translated("get DLQ url"):
            url: str = self._within(timeout).get_queue_url(QueueName=name, **kwargs)["QueueUrl"]
        return url, max_receives

    def send_bodies(self, bodies: Sequence[str]) -> int:
        """Send bodies, 10 per call; return how many were sent."""
        sent = 0
        for chunk in chunks(bodies):
            entries = [{"Id": str(j), "MessageBody": b} for j, b in enumerate(chunk)]
            with translated("send"):
                answer = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            if answer.get("Failed"):
                codes = sorted({f.get("Code", "?") for f in answer["Failed"]})
                raise SourceUnavailable(f"SQS send failed for {len(answer['Failed'])}: {codes}")
            sent += len(chunk)
        return sent
