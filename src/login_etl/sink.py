"""The sink seam: write one batch of rows and rejections atomically.

`PostgresSink` (in `postgres`) is the real one; `MemorySink` here serves unit
tests and the benchmark's no-network mode. Both follow one contract:

* everything in a batch commits together or not at all;
* a message id already recorded (a redelivery) is skipped, never loaded twice;
* a row the store refuses is turned into a rejection through `Batch.reject`,
  and the rest of the batch still loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from login_etl.transform import Rejection, Row


@dataclass(slots=True)
class Batch:
    """Rows and rejections to commit in one transaction."""

    rows: list[Row]
    rejections: list[Rejection]
    # Builds the rejection for a row the store refused: (message_id, reason).
    reject: Callable[[str, str], Rejection]


@dataclass(slots=True)
class WriteResult:
    """What one committed batch did."""

    loaded: int = 0
    rejected: int = 0
    duplicates: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class Sink(Protocol):
    """Where batches go."""

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        """Commit `batch` atomically; raise `SinkUnavailable` if it may be retried.

        `timeout`, when given, is how long the write may take, connecting
        included (the time left of the retry budget): past it, it fails as
        retryable.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def count_reasons(rejections: list[Rejection]) -> dict[str, int]:
    """Rejections per reason."""
    counts: dict[str, int] = {}
    for r in rejections:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    return counts


class MemorySink:
    """An in-memory sink with the same idempotency contract as PostgreSQL."""

    def __init__(self, refuse: Callable[[Row], str | None] | None = None) -> None:
        self.rows: list[Row] = []
        self.rejections: dict[str, Rejection] = {}
        self.ledger: dict[str, str] = {}
        self._refuse = refuse

    def write(self, batch: Batch, *, timeout: float | None = None) -> WriteResult:
        """Apply `batch`, skipping ledgered ids; `refuse` plays a database row error.

        Changes are collected first and applied at the end, so a failure part-way
        (in `refuse` or `batch.reject`) stores nothing, as a rolled-back
        transaction would.
        """
        result = WriteResult()
        ledger: dict[str, str] = {}
        rows: list[Row] = []
        rejections = list(batch.rejections)
        ids = [row.message_id for row in batch.rows]
        refuse = self._refuse
        if (
            len(set(ids)) == len(ids)
            and self.ledger.keys().isdisjoint(ids)
            and (refuse is None or not any(refuse(row) for row in batch.rows))
        ):
            # The usual batch, every row new and none refused: no row-by-row pass.
            ledger, rows = dict.fromkeys(ids, "loaded"), list(batch.rows)
        else:
            for row in batch.rows:
                if row.message_id in self.ledger or row.message_id in ledger:
                    result.duplicates += 1
                    continue
                reason = refuse(row) if refuse else None
                if reason is not None:
                    rejections.append(batch.reject(row.message_id, reason))
                    continue
                ledger[row.message_id] = "loaded"
                rows.append(row)
        fresh = []
        for rej in rejections:
            if rej.message_id in self.ledger or rej.message_id in ledger:
                result.duplicates += 1
                continue
            ledger[rej.message_id] = "rejected"
            fresh.append(rej)
        self.ledger.update(ledger)
        self.rows += rows
        self.rejections.update((rej.message_id, rej) for rej in fresh)
        result.loaded = len(rows)
        result.rejected = len(fresh)
        result.reasons = count_reasons(fresh)
        return result

    def close(self) -> None:
        """Nothing to release."""
