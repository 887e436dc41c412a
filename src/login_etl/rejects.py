"""Acting on rejections: list them, and replay them through the current rules.

A replay opens each stored (sealed) body with the masking key and runs it
through `transform` again. What passes now is inserted into `user_logins`,
its ledger entry is marked ``loaded`` and its rejection removed, all in one
transaction, so a message moves exactly once even when two replays run at
the same time (rows are locked with ``FOR UPDATE SKIP LOCKED``). What still
fails stays, with its reason brought up to date.

A sealed body that does not open (tampered, copied from another row, sealed
by a key not configured) stops neither a listing nor a replay: its message
id is reported with the reason and the row is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from login_etl import record
from login_etl.errors import MaskingError
from login_etl.masking import Masker
from login_etl.postgres import is_row_error, locked_pages
from login_etl.record import params_of
from login_etl.reveal import masked_body
from login_etl.source import Message
from login_etl.sqlfiles import query, statement
from login_etl.transform import Row, open_body, transform


@dataclass(frozen=True)
class Rejected:
    """One stored rejection; `body` only when asked for and the key opens it.

    `unreadable` says why a body asked for did not open.
    """

    message_id: str
    reason: str
    sent_at: datetime
    rejected_at: datetime
    receive_count: int
    body: str | None = None
    unreadable: str | None = None


@dataclass
class ReplayResult:
    """What a replay did."""

    examined: int = 0
    loaded: int = 0
    still_rejected: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (message id, why)


def counts_by_reason(conn: psycopg.Connection[Any]) -> list[tuple[str, int, datetime]]:
    """(reason, count, last rejected at), most frequent first."""
    return [(r[0], int(r[1]), r[2]) for r in conn.execute(query("rejects_by_reason")).fetchall()]


def recent(
    conn: psycopg.Connection[Any],
    *,
    limit: int = 20,
    reason: str | None = None,
    masker: Masker | None = None,
    reveal_pii: bool = False,
) -> list[Rejected]:
    """The newest rejections; bodies are opened only when `masker` is given.

    An opened body has its ip and device_id masked unless `reveal_pii`.
    """
    rows = conn.execute(query("rejects_recent"), {"reason": reason, "limit": limit}).fetchall()
    out = []
    for message_id, why, sent_at, rejected_at, receive_count, sealed in rows:
        body = unreadable = None
        if masker is not None:
            try:
                body = open_body(masker, sealed, message_id)
            except MaskingError as exc:
                unreadable = str(exc)
            if body is not None and not reveal_pii:
                body = masked_body(body, masker)
        out.append(Rejected(message_id, why, sent_at, rejected_at, receive_count, body, unreadable))
    return out


def replay(
    conn: psycopg.Connection[Any],
    masker: Masker,
    *,
    reason: str | None = None,
    page: int = 500,
    lake: bool = False,
    extra_fields: frozenset[str] = frozenset(),
) -> ReplayResult:
    """Re-run stored rejections (optionally one reason) through the current rules.

    With `lake`, what loads now also gets its lake record in the outbox
    (keeping the fields named in `extra_fields`).
    """
    result = ReplayResult()
    for rows in locked_pages(conn, "replay_select", {"reason": reason}, after="", page=page):
        for message_id, old_reason, sent_at, receive_count, sealed in rows:
            try:
                body = open_body(masker, sealed, message_id)
            except MaskingError as exc:
                result.unreadable.append((message_id, str(exc)))
                continue
            message = Message(message_id, "", body, sent_at, receive_count)
            new_reason = _replay_one(conn, message, masker, lake=lake, extra_fields=extra_fields)
            if new_reason is None:
                result.loaded += 1
                continue
            if new_reason != old_reason:
                conn.execute(
                    query("replay_update_reason"), {"message_id": message_id, "reason": new_reason}
                )
            result.still_rejected[new_reason] = result.still_rejected.get(new_reason, 0) + 1
        result.examined += len(rows)
    return result


def _replay_one(
    conn: psycopg.Connection[Any],
    message: Message,
    masker: Masker,
    *,
    lake: bool = False,
    extra_fields: frozenset[str] = frozenset(),
) -> str | None:
    """Load one message if it passes now; return the reason when it still fails."""
    out = transform(message, masker, lake=lake, extra_fields=extra_fields)
    if not isinstance(out, Row):
        return out.reason
    try:
        with conn.transaction():  # a savepoint: a refused row leaves the rest intact
            table = record.user_logins()
            conn.execute(statement("replay_insert", user_logins=table), params_of(out, table))
            if lake:
                every = record.lake()
                conn.execute(statement("lake_outbox_insert", lake=every), params_of(out, every))
            conn.execute(
                query("replay_mark_loaded"),
                {"message_id": message.message_id, "sent_at": message.sent_at},
            )
            conn.execute(query("replay_forget"), {"message_id": message.message_id})
    except psycopg.Error as exc:
        if not is_row_error(exc):
            raise
        return f"db_error:{exc.sqlstate}"
    return None
