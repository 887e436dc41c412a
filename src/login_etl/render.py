"""Printing results for people (rich tables) or machines (JSON) — CLI only."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from login_etl.recovery import UserLogin
from login_etl.rejects import Rejected
from login_etl.reveal import escape


def console() -> Console:
    """A console for tables: the terminal's width, or, piped or redirected, no limit.

    Into a pipe or a file, a table is cut at nobody's screen: ids and reasons
    are printed whole, for grep and for the next command.
    """
    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000, no_color=True)


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def rejections(
    counts: Sequence[tuple[str, int, datetime]],
    recent: Sequence[Rejected],
    *,
    as_json: bool = False,
) -> None:
    """Show rejection counts by reason and the newest rejections."""
    if as_json:
        doc = {
            "by_reason": {reason: n for reason, n, _ in counts},
            "total": sum(n for _, n, _ in counts),
            "recent": [
                {
                    "message_id": r.message_id,
                    "reason": r.reason,
                    "sent_at": r.sent_at.isoformat(),
                    "rejected_at": r.rejected_at.isoformat(),
                    "receive_count": r.receive_count,
                    **({"body": r.body} if r.body is not None else {}),
                }
                for r in recent
            ],
        }
        click.echo(json.dumps(doc))
        return
    out = console()
    by_reason = Table(title="Rejections by reason")
    by_reason.add_column("reason")
    by_reason.add_column("count", justify="right")
    by_reason.add_column("last rejected (UTC)")
    for reason, n, last in counts:
        by_reason.add_row(Text(reason), str(n), _utc(last))
    out.print(by_reason)
    if not recent:
        return
    table = Table(title="Most recent")
    for col in ("message id", "reason", "sent (UTC)", "receives"):
        table.add_column(col)
    show_bodies = any(r.body is not None for r in recent)
    if show_bodies:
        table.add_column("body")
    for r in recent:
        cells: list[str | Text] = [
            Text(r.message_id),
            Text(r.reason),
            _utc(r.sent_at),
            str(r.receive_count),
        ]
        if show_bodies:
            cells.append(Text(escape(r.body or "")))  # never as markup, no raw controls
        table.add_row(*cells)
    out.print(table)


def user_logins(rows: Sequence[UserLogin], fields: Sequence[str]) -> None:
    """One user's rows as tab-separated lines after a header, every cell escaped."""
    click.echo("\t".join(["create_date", "device_type", *fields]))
    for r in rows:
        cells = [str(r.create_date or ""), r.device_type or ""]
        cells += [(r.ip if f == "ip" else r.device_id) or "" for f in fields]
        click.echo("\t".join(escape(c) for c in cells))
