"""Ledger retention: forget message ids SQS can no longer redeliver.

SQS keeps a message for the queue's ``MessageRetentionPeriod`` after it was
sent, so a redelivery is possible only within that window after
``SentTimestamp``. Entries whose message was sent longer ago than retention
plus a safety margin are pruned; younger ones are never touched.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from login_etl.errors import LoginEtlError
from login_etl.sqlfiles import query

log = logging.getLogger(__name__)

# Clock skew between SQS and PostgreSQL, and messages still being received
# at the moment they expire: a day is far beyond either.
PRUNE_MARGIN_SECONDS = 86_400


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
    connect: Any, retention_seconds: float, stop: threading.Event, *, every: float = 3600
) -> None:
    """Prune every `every` seconds until `stop` is set (runs in a daemon thread)."""
    while not stop.wait(every):
        try:
            with connect() as conn:
                pruned = prune(conn, retention_seconds)
            if pruned:
                log.info("ledger pruned", extra={"fields": {"entries": pruned}})
        except (LoginEtlError, psycopg.Error) as exc:
            log.warning("ledger pruning failed, will retry: %s", type(exc).__name__)
