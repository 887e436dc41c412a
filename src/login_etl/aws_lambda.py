"""AWS Lambda entry point: an SQS event source mapping delivers, this loads.

``login_etl.aws_lambda.handler`` takes the mapping's batch of SQS records,
runs each through the same `transform` as a worker and commits the lot in
one `PostgresSink` transaction (rows, rejections, ledger). It answers with
a partial batch response (``ReportBatchItemFailures``): only the records
that did not commit are named, so SQS redelivers exactly those, and the
ledger skips any that did commit after all. A poison body is a rejection,
never a failure. It never deletes: the mapping deletes what is not named.

* A record that cannot be read fails alone; from a FIFO queue, the records
  after it in its message group fail too (`failing_ids`), keeping each
  group's order. A failed write or too little time left fails them all.
* Settings, key (a ``kms:`` key is decrypted once) and the connection live
  as long as the execution environment; a dropped connection is replaced
  once within the invocation, and again on the next.
* Logs are JSON lines on stdout with the request id; each invocation ends
  with one CloudWatch Embedded Metric Format line (docs/lambda.md).
* ``login_etl.aws_lambda.prune``, on a schedule, forgets ledger entries no
  queue can still redeliver, as a worker's hourly prune does.

Only what a handler needs is imported: not click, rich, prometheus_client
or the lake, nor boto3 unless a key is held by KMS.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from login_etl import ledger, logs, schema, secretenv
from login_etl.errors import ConfigError, LoginEtlError, RetryableError, SinkUnavailable
from login_etl.masking import Masker
from login_etl.pgsink import PostgresSink, deadline
from login_etl.postgres import check_url, session
from login_etl.rekey import check_keys
from login_etl.sink import Batch, WriteResult
from login_etl.source import Message
from login_etl.transform import Rejection, Row, reject, transform

log = logging.getLogger(__name__)

# Kept back from the remaining time for the rollback, the response and the log lines.
MARGIN_SECONDS = 1.0
# A step (a write, the key check) is not started with less than this left after the
# margin: libpq gives a connect at least 2 s.
MIN_WRITE_SECONDS = 2.0
NAMESPACE = "login-etl"
_LEVELS = ("debug", "info", "warning", "error")


class Context(Protocol):
    """The part of Lambda's context object the handler uses."""

    aws_request_id: str
    function_name: str

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda stops the invocation."""
        ...


@dataclass(frozen=True)
class LambdaSettings:
    """The handler's settings: the database and the keys, the same variables as a worker's.

    Each also in its ``*_FILE`` form. Secrets are hidden from repr.
    """

    database_url: str = field(default="", repr=False)
    masking_key: str | None = field(default=None, repr=False)
    masking_old_keys: str = field(default="", repr=False)
    log_level: str = "info"
    notes: tuple[str, ...] = ()

    @classmethod
    def load(cls, env: Mapping[str, str]) -> LambdaSettings:
        """Read and check the settings; a bad one is a ConfigError naming it."""
        notes: list[str] = []

        def secret(name: str) -> str | None:
            return secretenv.from_env(f"LOGIN_ETL_{name}", env, notes, secret=True)[0]

        settings = cls(
            database_url=secret("DATABASE_URL") or "",
            masking_key=secret("MASKING_KEY"),
            masking_old_keys=secret("MASKING_OLD_KEYS") or "",
            log_level=(env.get("LOGIN_ETL_LOG_LEVEL") or "info").strip().lower(),
            notes=tuple(notes),
        )
        secretenv.register(settings.database_url, settings.masking_key, settings.masking_old_keys)
        if settings.log_level not in _LEVELS:
            raise ConfigError(f"LOGIN_ETL_LOG_LEVEL: expected one of {', '.join(_LEVELS)}")
        if (env.get("LOGIN_ETL_LAKE_WAREHOUSE") or "").strip():
            raise ConfigError(
                "LOGIN_ETL_LAKE_WAREHOUSE is set, but the Lambda handler does not feed the "
                "lake stage: run workers for a queue whose events go to the lake"
            )
        check_url(settings.database_url)
        return settings


# -- the pure parts ----------------------------------------------------------------


def message_from_record(record: Mapping[str, Any]) -> Message:
    """The `Message` in one record of an SQS event, as a worker builds it from a receive.

    Raises KeyError, TypeError or ValueError for a record without a text
    body or a numeric ``SentTimestamp`` (it decides ``create_date``).
    """
    attributes = record["attributes"]
    body = record["body"]
    if not isinstance(body, str):
        raise TypeError("the record's body is not text")
    sent_ms = int(attributes["SentTimestamp"])
    return Message(
        message_id=str(record["messageId"]),
        receipt=str(record["receiptHandle"]),
        body=body,
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
        receive_count=int(attributes.get("ApproximateReceiveCount") or 1),
    )


def group_of(record: Mapping[str, Any]) -> str | None:
    """The record's message group when it comes from a FIFO queue, else None.

    A standard queue may carry group ids too (fair queues), without any order to keep.
    """
    if not str(record.get("eventSourceARN", "")).endswith(".fifo"):
        return None
    group = (record.get("attributes") or {}).get("MessageGroupId")
    return str(group) if group is not None else None


def failing_ids(records: Sequence[tuple[str, str | None]], failed: Collection[str]) -> list[str]:
    """The ids to report, in event order: `failed`, and in each FIFO group every record
    after that group's first failure.

    `records` are (message id, group or None) in the order the event lists them.
    """
    broken: set[str] = set()
    out: list[str] = []
    for message_id, group in records:
        if message_id in failed or (group is not None and group in broken):
            if group is not None:
                broken.add(group)
            if message_id not in out:
                out.append(message_id)
    return out


def response(ids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    """The partial batch response naming `ids`."""
    return {"batchItemFailures": [{"itemIdentifier": i} for i in ids]}


# -- the execution environment -------------------------------------------------------


class _RequestId(logging.Filter):
    """Adds the invocation's request id to every log line."""

    def __init__(self) -> None:
        super().__init__()
        self.request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the field; never drops a record."""
        fields = getattr(record, "fields", None)
        fields = dict(fields) if isinstance(fields, dict) else {}
        fields["request_id"] = self.request_id
        record.fields = fields  # what logs.JsonFormatter reads
        return True


class Handler:
    """One execution environment: settings, masker and connection, made on the first call.

    `handler` below is the one Lambda calls; tests build their own with an
    environment of their choosing.
    """

    def __init__(self, env: Mapping[str, str] | None = None, out: TextIO | None = None) -> None:
        self._env = env
        self._out = out
        self._settings: LambdaSettings | None = None
        self._masker: Masker | None = None
        self._sink: PostgresSink | None = None
        self._keys_checked = False
        self._request = _RequestId()
        self.invocations = 0

    def _configure(self) -> LambdaSettings:
        """Settings and logging, once; a failure is retried on the next call."""
        if self._settings is None:
            settings = LambdaSettings.load(os.environ if self._env is None else self._env)
            out = self._out or sys.stdout
            logs.configure("json", settings.log_level, stream=out)
            logging.getLogger().handlers[0].addFilter(self._request)
            for note in settings.notes:
                log.warning(note)
            self._out, self._settings = out, settings
        return self._settings

    def _start(self) -> tuple[Masker, PostgresSink]:
        """The masker (a kms: key decrypted here) and the sink, once."""
        settings = self._configure()
        if self._masker is None:
            self._masker = secretenv.masker(settings.masking_key, settings.masking_old_keys)
            log.info("function started", extra={"fields": {"key_id": self._masker.key_id}})
        if self._sink is None:
            # A hung server is cut off by each write's own timeout, the time left.
            self._sink = PostgresSink(settings.database_url)
        return self._masker, self._sink

    def close(self) -> None:
        """Close the connection (tests; Lambda just freezes and ends the environment)."""
        if self._sink is not None:
            self._sink.close()

    def __call__(self, event: Mapping[str, Any], context: Context) -> dict[str, Any]:
        """Load the event's records; name the ones not committed."""
        started, cpu = time.monotonic(), time.process_time()
        self._request.request_id = getattr(context, "aws_request_id", "")
        cold = self.invocations == 0
        self.invocations += 1
        records: Sequence[Mapping[str, Any]] = event["Records"]
        ids = [(_message_id(r), group_of(r)) for r in records]
        masker, sink = self._start()
        messages, outputs, failed = _read(records, masker)
        failing = failing_ids(ids, failed)
        keep = {m for m, _ in ids} - set(failing)
        batch = _batch(
            [m for m in messages if m.message_id in keep],
            [o for o in outputs if o.message_id in keep],
            masker,
        )
        result, committed = WriteResult(), []
        if keep:
            try:
                result = self._write(sink, masker, batch, context)
                committed = [m.sent_at for m in messages if m.message_id in keep]
            except RetryableError as exc:
                log.warning(
                    "the write failed; every record is reported failed "
                    "(the ledger skips any that committed after all)",
                    extra={"fields": {"error": str(exc), "records": len(keep)}},
                )
                failing = failing_ids(ids, keep | set(failing))
            except LoginEtlError as exc:
                # Configuration or a refused statement: the invocation errors, so
                # Lambda's Errors metric and the mapping's backoff see it.
                log.error("invocation failed: %s", exc)
                raise
        self._emit(
            context,
            records=len(records),
            result=result,
            failed=len(failing),
            cold=cold,
            seconds=time.monotonic() - started,
            cpu=time.process_time() - cpu,
            committed=committed,
        )
        return response(failing)

    def _write(
        self, sink: PostgresSink, masker: Masker, batch: Batch, context: Context
    ) -> WriteResult:
        """Check the keys (once), then commit, each step (connecting included) within
        the time left; a lost connection is replaced once. Raises RetryableError when
        nothing committed."""
        for attempt in (1, 2):
            try:
                if not self._keys_checked:
                    self._check_keys(masker, _budget(context))
                    self._keys_checked = True
                return sink.write(batch, timeout=_budget(context))
            except SinkUnavailable as exc:
                if attempt == 2:
                    raise
                log.warning(
                    "PostgreSQL connection lost; reconnecting",
                    extra={"fields": {"error": str(exc)}},
                )
        raise AssertionError("unreachable")

    def _check_keys(self, masker: Masker, seconds: float) -> None:
        """As a worker does before its first write: refuse a key that made none of the
        stored masks. A locked table or a silent server is cut off after `seconds`."""
        assert self._settings is not None  # set by _start
        started = time.monotonic()
        with (
            session(self._settings.database_url, connect_timeout=seconds) as conn,
            deadline(conn, seconds - (time.monotonic() - started)),
        ):
            schema.check(conn)  # init-db is the owner's job, never the handler's
            check_keys(conn, masker)

    def _emit(
        self,
        context: Context,
        *,
        records: int,
        result: WriteResult,
        failed: int,
        cold: bool,
        seconds: float,
        cpu: float,
        committed: list[datetime],
    ) -> None:
        """One EMF line: CloudWatch turns its named values into metrics, no API call."""
        now = datetime.now(UTC)
        # The oldest committed message's age: how far behind the queue this function runs.
        # A clock behind SQS's makes ages negative: 0, as the worker's lag histogram.
        lag = max([0.0, *((now - sent).total_seconds() for sent in committed)])
        values: dict[str, float] = {
            "records": records,
            "loaded": result.loaded,
            "rejected": result.rejected,
            "duplicates": result.duplicates,
            "failed": failed,
            "cold_start": int(cold),
            "duration_ms": round(seconds * 1000, 1),
            "cpu_ms": round(cpu * 1000, 1),
            "lag_seconds": round(lag, 3),
        }
        units = {"duration_ms": "Milliseconds", "cpu_ms": "Milliseconds", "lag_seconds": "Seconds"}
        doc: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(now.timestamp() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": NAMESPACE,
                        "Dimensions": [["function"]],
                        "Metrics": [{"Name": n, "Unit": units.get(n, "Count")} for n in values],
                    }
                ],
            },
            "function": getattr(context, "function_name", ""),
            "request_id": self._request.request_id,
            "msg": "invocation done",
            **values,
            "rejections": result.reasons,
        }
        assert self._out is not None
        self._out.write(json.dumps(doc) + "\n")
        self._out.flush()

    def prune(self, event: Mapping[str, Any], context: Context) -> dict[str, int]:
        """Scheduled: forget ledger entries no queue can redeliver (older than SQS's
        longest retention plus a day), as a worker's hourly prune does."""
        self._request.request_id = getattr(context, "aws_request_id", "")
        settings = self._configure()
        with session(settings.database_url) as conn:
            pruned = ledger.prune(conn, ledger.SQS_MAX_RETENTION_SECONDS)
        log.info("ledger pruned", extra={"fields": {"entries": pruned}})
        return {"pruned": pruned}


class _OutOfTime(RetryableError):
    """Too little of the invocation's time is left to start a write."""


def _message_id(record: Mapping[str, Any]) -> str:
    """A record's message id; an event without one is not SQS's, and fails whole."""
    message_id = record.get("messageId") if isinstance(record, Mapping) else None
    if not isinstance(message_id, str) or not message_id:
        raise ValueError("not an SQS event: a record has no messageId")
    return message_id


def _read(
    records: Sequence[Mapping[str, Any]], masker: Masker
) -> tuple[list[Message], list[Row | Rejection], set[str]]:
    """Each record's message and transform; the ids of records that could not be read."""
    messages: list[Message] = []
    outputs: list[Row | Rejection] = []
    failed: set[str] = set()
    for record in records:
        try:
            message = message_from_record(record)
            outputs.append(transform(message, masker))
        except Exception as exc:  # noqa: BLE001 - that record fails, the rest go on
            # The exception's type only: its text may quote a field of the record.
            log.error(
                "a record could not be read; it is reported failed",
                extra={"fields": {"message_id": record["messageId"], "error": type(exc).__name__}},
            )
            failed.add(record["messageId"])
            continue
        messages.append(message)
    return messages, outputs, failed


def _seconds_left(context: Context) -> float:
    return context.get_remaining_time_in_millis() / 1000


def _budget(context: Context) -> float:
    """The seconds the next step may take: the time left less the margin."""
    budget = _seconds_left(context) - MARGIN_SECONDS
    if budget < MIN_WRITE_SECONDS:
        raise _OutOfTime(f"{budget + MARGIN_SECONDS:.1f}s left: too little to write")
    return budget


def _batch(messages: list[Message], outputs: list[Row | Rejection], masker: Masker) -> Batch:
    """The sink's batch; a row the database refuses becomes a rejection of its message."""
    by_id = {m.message_id: m for m in messages}
    rows = [o for o in outputs if isinstance(o, Row)]
    rejections = [o for o in outputs if isinstance(o, Rejection)]
    return Batch(rows, rejections, lambda mid, reason: reject(by_id[mid], reason, masker))


handler = Handler()
prune = handler.prune
