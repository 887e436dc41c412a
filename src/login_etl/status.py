"""`login-etl status`: where the queue and the tables stand, at a glance.

Read-only. Queue depth comes from SQS's approximate counters (and the dead
letter queue's, when the queue has a redrive policy); rows, rejections and
the last load time come from PostgreSQL. Tables that do not exist yet count
as empty, so status works before the first run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from rich import box
from rich.console import Console
from rich.table import Table

from login_etl.config import Settings
from login_etl.postgres import session
from login_etl.sqlfiles import query
from login_etl.sqs import SqsSource, make_client


@dataclass(frozen=True)
class QueueStatus:
    """Approximate message counts of the queue (and of its DLQ, if it has one)."""

    url: str
    visible: int
    in_flight: int
    delayed: int
    dlq_url: str | None = None
    dlq_visible: int | None = None


@dataclass(frozen=True)
class TableStatus:
    """What the service has written to PostgreSQL so far."""

    rows_loaded: int
    rejections: dict[str, int]
    last_load_at: datetime | None

    @property
    def rejected(self) -> int:
        """All rejected messages."""
        return sum(self.rejections.values())


@dataclass(frozen=True)
class Status:
    """The queue (None when no queue is configured) and the tables."""

    queue: QueueStatus | None
    tables: TableStatus


def queue_status(queue_url: str, protocol: str = "auto") -> QueueStatus:
    """Depth of the queue and, when it has a redrive policy, of its DLQ."""
    client = make_client(queue_url, protocol=protocol)
    info = SqsSource(queue_url, client=client).info()
    dlq_visible = None
    if info.dlq_url:
        dlq_visible = SqsSource(info.dlq_url, client=client).depth().visible
    return QueueStatus(
        url=queue_url,
        visible=info.visible,
        in_flight=info.in_flight,
        delayed=info.delayed,
        dlq_url=info.dlq_url,
        dlq_visible=dlq_visible,
    )


def table_status(database_url: str) -> TableStatus:
    """Rows loaded, rejections by reason and the last commit time; zeros for missing tables."""
    with session(database_url) as conn:
        return _table_status(conn)


def _table_status(conn: psycopg.Connection[Any]) -> TableStatus:
    row = conn.execute(query("status_tables")).fetchone()
    has_rows, has_rejected, has_ledger = row if row else (False, False, False)
    rows_loaded = 0
    if has_rows:
        counted = conn.execute(query("status_rows")).fetchone()
        rows_loaded = int(counted[0]) if counted else 0
    rejections: dict[str, int] = {}
    if has_rejected:
        rejections = {r: int(n) for r, n in conn.execute(query("status_rejections")).fetchall()}
    last = None
    if has_ledger:
        found = conn.execute(query("status_last_load")).fetchone()
        last = found[0] if found else None
    return TableStatus(rows_loaded=rows_loaded, rejections=rejections, last_load_at=last)


def collect(settings: Settings) -> Status:
    """The status of the configured queue (if any) and database."""
    queue = queue_status(settings.queue_url, settings.sqs_protocol) if settings.queue_url else None
    return Status(queue=queue, tables=table_status(settings.database_url))


def to_dict(status: Status) -> dict[str, Any]:
    """A JSON-ready view of `status` (times in ISO 8601)."""
    q = status.queue
    t = status.tables
    return {
        "queue": None
        if q is None
        else {
            "url": q.url,
            "visible": q.visible,
            "in_flight": q.in_flight,
            "delayed": q.delayed,
            "dlq_url": q.dlq_url,
            "dlq_visible": q.dlq_visible,
        },
        "rows_loaded": t.rows_loaded,
        "rejected": t.rejected,
        "rejections": dict(t.rejections),
        "last_load_at": t.last_load_at.isoformat() if t.last_load_at else None,
    }


def render(status: Status, console: Console) -> None:
    """Print `status` as a plain table."""
    q = status.queue
    where = "not configured (LOGIN_ETL_QUEUE_URL)" if q is None else q.url
    console.print(f"queue: {where}", markup=False, highlight=False, soft_wrap=True)
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    if q is not None:
        table.add_row("messages visible", f"{q.visible:,}")
        table.add_row("messages in flight", f"{q.in_flight:,}")
        table.add_row("messages delayed", f"{q.delayed:,}")
        if q.dlq_url is not None:
            table.add_row("dead-letter queue (visible)", f"{q.dlq_visible or 0:,}")
    t = status.tables
    table.add_row("rows loaded (user_logins)", f"{t.rows_loaded:,}")
    table.add_row("rejected (user_logins_rejected)", f"{t.rejected:,}")
    for reason, n in sorted(t.rejections.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {reason}", f"{n:,}")
    last = t.last_load_at.isoformat(timespec="seconds") if t.last_load_at else "never"
    table.add_row("last load", last)
    console.print(table)
