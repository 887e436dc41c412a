"""PII recovery and roles: the library side of `unmask`, `rejects list --show-bodies`
and `grant`.

Whatever reveals a plaintext value commits its audit row (`audit.record`)
before returning the value; a missing or bad ``--purpose`` stops the command
before the key is even read. See docs/security.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from login_etl import audit, rejects
from login_etl.audit import Access
from login_etl.config import Settings
from login_etl.errors import ConfigError, MaskingError
from login_etl.grants import grant
from login_etl.postgres import session
from login_etl.sqlfiles import query


@dataclass(frozen=True)
class Purpose:
    """Why PII is revealed and by whom (``--purpose``, ``--actor``), for the audit."""

    purpose: str | None
    actor: str | None = None

    def access(self, command: str, field: str, count: int, user_id: str | None = None) -> Access:
        """The audit row for revealing `count` values of `field` with `command`."""
        return Access(
            actor=audit.actor_of(self.actor),
            command=command,
            field=field,
            value_count=count,
            purpose=audit.purpose_of(self.purpose),
            user_id=user_id,
        )


def list_rejections(
    settings: Settings,
    *,
    limit: int,
    reason: str | None,
    bodies: Purpose | None = None,
    reveal_pii: bool = False,
) -> tuple[list[tuple[str, int, datetime]], list[rejects.Rejected]]:
    """Counts by reason and the newest rejections.

    With `bodies`, the bodies are opened (ip and device_id masked unless
    `reveal_pii`), and returned only once the audit row is committed. A body
    that does not open is left out (`Rejected.unreadable` says why) and the
    others are still shown.
    """
    if reveal_pii and bodies is None:
        raise ConfigError("--reveal-pii needs --show-bodies")
    if bodies is None:
        with session(settings.database_url) as conn:
            return rejects.counts_by_reason(conn), rejects.recent(conn, limit=limit, reason=reason)
    command = "rejects list --show-bodies" + (" --reveal-pii" if reveal_pii else "")
    field = "body,ip,device_id" if reveal_pii else "body"
    bodies.access(command, field, 0)  # a missing or bad --purpose stops here, before the key
    masker = settings.masker()
    with session(settings.database_url) as conn:
        counts = rejects.counts_by_reason(conn)
        recent = rejects.recent(
            conn, limit=limit, reason=reason, masker=masker, reveal_pii=reveal_pii
        )
        opened = sum(r.body is not None for r in recent)
        audit.record(conn, bodies.access(command, field, opened))
    return counts, recent


def unmask_masks(settings: Settings, field: str, masks: Sequence[str], why: Purpose) -> list[str]:
    """The value of each mask (an empty one gives ""), returned once the audit row is committed.

    All masks are opened before the audit is written: one that no key opens
    stops the command with nothing recorded and nothing revealed.
    """
    count = sum(1 for m in masks if m.strip())
    why.access("unmask", field, count)  # a missing or bad --purpose stops here
    masker = settings.masker()
    values = []
    for n, mask in enumerate(masks, 1):
        if not mask.strip():
            values.append("")
            continue
        try:
            values.append(masker.unmask(field, mask))
        except MaskingError as exc:
            raise MaskingError(f"mask {n}: {exc}") from None
    if count:
        with session(settings.database_url) as conn:
            audit.record(conn, why.access("unmask", field, count))
    return values


@dataclass(frozen=True)
class UserLogin:
    """One of a user's rows with its masks opened (None where not asked for, or NULL)."""

    create_date: date | None
    device_type: str | None
    ip: str | None
    device_id: str | None


def unmask_user(
    settings: Settings, user_id: str, fields: Sequence[str], why: Purpose
) -> list[UserLogin]:
    """One user's rows with `fields` unmasked, returned once the audit row is committed."""
    command, field = "unmask --user-id", ",".join(fields)
    why.access(command, field, 0)
    masker = settings.masker()

    def opened(name: str, mask: str | None) -> str | None:
        return masker.unmask(name, mask) if name in fields and mask is not None else None

    with session(settings.database_url) as conn:
        rows = conn.execute(query("pii_user_rows"), {"user_id": user_id}).fetchall()
        found = [
            UserLogin(day, kind, opened("ip", ip), opened("device_id", dev))
            for day, kind, ip, dev in rows
        ]
        revealed = sum((r.ip is not None) + (r.device_id is not None) for r in found)
        audit.record(conn, why.access(command, field, revealed, user_id))
    return found


def grant_role(settings: Settings, kind: str, role: str) -> None:
    """Give an existing PostgreSQL role the `kind` (writer, analyst) set of privileges."""
    with session(settings.database_url) as conn:
        grant(conn, kind, role)
