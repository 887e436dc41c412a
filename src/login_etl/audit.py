"""The PII access audit: a committed row before anything is revealed.

Every command that shows plaintext PII or message bodies (`unmask`,
``rejects list --show-bodies``) first commits one row to
``login_etl_pii_access``: when, who (``--actor``, else the OS user; the
database role is added by PostgreSQL), which command and field, how many
values, and the stated purpose. The row never holds the values. If the write
fails, the command stops there and reveals nothing.

The row is written through the database function
``login_etl_record_pii_access`` (sql/migrations/0001_schema.sql): PostgreSQL sets the time
and the role, and forces a durable commit; no role but the owner may write
the table directly.
"""

from __future__ import annotations

import getpass
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from login_etl.errors import ConfigError
from login_etl.sqlfiles import query

log = logging.getLogger(__name__)

MAX_PURPOSE = 1000
MAX_ACTOR = 128


@dataclass(frozen=True)
class Access:
    """One act of revealing PII, as the audit table records it."""

    actor: str
    command: str
    field: str
    value_count: int
    purpose: str
    user_id: str | None = None  # the user whose rows `unmask --user-id` looked up


@dataclass(frozen=True)
class Recorded:
    """The audit row as committed."""

    id: int
    accessed_at: datetime
    db_role: str


def os_user() -> str:
    """The name of the OS user running the command (a uid when there is none)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # containers often run as a uid with no passwd entry
        return f"uid:{os.getuid()}"


def _clean(value: str | None, what: str, limit: int) -> str:
    text = (value or "").strip()
    if not text:
        raise ConfigError(f"{what} must not be empty")
    if len(text) > limit:
        raise ConfigError(f"{what} is longer than {limit} characters")
    if not text.isprintable():
        raise ConfigError(f"{what} must not contain control characters")
    return text


def purpose_of(purpose: str | None) -> str:
    """The stated purpose, checked: required, one printable line, bounded."""
    if purpose is None:
        raise ConfigError("revealing PII needs --purpose TEXT (it is recorded in the audit)")
    return _clean(purpose, "--purpose", MAX_PURPOSE)


def actor_of(actor: str | None) -> str:
    """`actor`, or the OS user when it is not given, checked alike.

    The OS user's name comes from LOGNAME or USER when they are set, so it is
    no more trusted than ``--actor``.
    """
    if actor is not None:
        return _clean(actor, "--actor", MAX_ACTOR)
    return _clean(os_user(), "the OS user name (LOGNAME, USER; or give --actor)", MAX_ACTOR)


def record(conn: psycopg.Connection[Any], access: Access) -> Recorded:
    """Insert the audit row and COMMIT it (durably); only then may the caller reveal anything.

    `conn` must not be in autocommit mode; whatever it has read in this
    transaction is committed along with the row.
    """
    row = conn.execute(
        query("audit_insert"),
        {
            "actor": access.actor,
            "command": access.command,
            "field": access.field,
            "value_count": access.value_count,
            "purpose": access.purpose,
            "user_id": access.user_id,
        },
    ).fetchone()
    conn.commit()
    assert row is not None  # INSERT … RETURNING returns its row
    recorded = Recorded(id=int(row[0]), accessed_at=row[1], db_role=str(row[2]))
    log.info(
        "PII access recorded",
        extra={
            "fields": {
                "audit_id": recorded.id,
                "actor": access.actor,
                "db_role": recorded.db_role,
                "command": access.command,
                "field": access.field,
                "values": access.value_count,
            }
        },
    )
    return recorded
