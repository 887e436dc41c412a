"""Ledger retention: forget message ids SQS can no longer redeliver.

SQS keeps a message for the queue's ``MessageRetentionPeriod`` after it was
sent, so a redelivery is possible only within that window after
``SentTimestamp``. Entries recorded longer ago than retention plus a safety
margin are pruned; younger ones are never touched. An entry is recorded
after its message was sent, so it is older still by its SentTimestamp (the
margin covers clock skew between SQS and PostgreSQL), and the ledger's
``recorded_at`` index finds them without a scan of the whole table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from login_etl.errors import LoginEtlError, RetryTimeExceeded
from login_etl.retry import Retrier
from login_etl.sqlfiles import query

log = logging.getLogger(__name__)

# Clock skew between SQS and PostgreSQL, and messages still being received
# at the moment they expire: a day is far beyond either.
PRUNE_MARGIN_SECONDS = 86_400
# The longest MessageRetentionPeriod SQS allows (14 days): what a queue that
# cannot be asked may keep.
SQS_MAX_RETENTION_SECONDS = 1_209_600


def prune(
    conn: psycopg.Connection[Any],
    retention_seconds: float,
    *,
    margin_seconds: float = PRUNE_MARGIN_SECONDS,
    dry_run: bool = False,
) -> int:
    """Delete (or with `dry_run`, count) entries older than retention + margin."""
    params = {"older_than": float(retention_seconds + margin_seconds)}
    with conn.transaction():
        if dry_run:
            row = conn.execute(query("prune_count"), params).fetchone()
            return int(row[0]) if row else 0
        return conn.execute(query("prune_ledger"), params).rowcount


def prune_periodically(
    connect: Callable[[float], AbstractContextManager[psycopg.Connection[Any]]],
    retention_seconds: float,
    retrier: Retrier,
    *,
    every: float = 3600,
) -> None:
    """Prune every `every` seconds until the retrier's stop event is set (a daemon thread).

    A failing prune is retried like every other call; if it still fails, the
    worker goes on loading (pruning is housekeeping) and tries again next time.
    `connect(seconds)` opens a connection within the retry budget's time left.
    """

    def once(seconds: float) -> int:
        with connect(seconds) as conn:
            return prune(conn, retention_seconds)

    while not retrier.stop.wait(every):
        try:
            pruned = retrier.call_within("prune", once)
        except RetryTimeExceeded as exc:
            log.warning("ledger pruning gave up until the next round: %s", exc)
            continue
        except LoginEtlError as exc:
            log.error("ledger pruning failed until the next round: %s", exc)
            continue
        if pruned:
            log.info("ledger pruned", extra={"fields": {"entries": pruned}})
