"""What the demo shows once the load is done: summary, rows, duplicates, unmask.

Rendering only: every function prints to the `rich.console.Console` it gets.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from login_etl.audit import Access, os_user, record
from login_etl.dev.local import LocalPostgres, local_aws_env
from login_etl.masking import Masker
from login_etl.reveal import escape
from login_etl.sqlfiles import query

FIRST_ROWS = 5
TOP_DUPLICATES = 10


@dataclass(frozen=True)
class Outcome:
    """The numbers of one demo run."""

    sent: int
    stats: dict[str, Any]
    seconds: float


def show_summary(console: Console, outcome: Outcome) -> None:
    """The counts of one run, rejections by reason, and the throughput."""
    snap = outcome.stats
    table = Table(title="Summary", box=box.SIMPLE, show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("messages sent", f"{outcome.sent:,}")
    table.add_row("received (SQS deliveries, repeats included)", f"{snap['received']:,}")
    table.add_row("loaded", f"{snap['loaded']:,}", style="green")
    table.add_row("rejected", f"{snap['rejected']:,}", style="yellow")
    for reason, n in sorted(snap["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"  {reason}", f"{n:,}", style="dim")
    table.add_row("redeliveries skipped (duplicates)", f"{snap['duplicates']:,}")
    rate = outcome.sent / outcome.seconds if outcome.seconds else 0.0
    table.add_row("throughput", f"{rate:,.0f} msg/s ({outcome.seconds:.1f} s)")
    console.print(table)
    console.print(
        "[dim]Throughput here is bounded by the embedded moto SQS, whose every call scans "
        "its queue; rejected messages are kept, sealed, in user_logins_rejected.[/]"
    )


def show_rows_and_duplicates(console: Console, conn: Any, masker: Masker) -> None:
    """First rows as an analyst sees them, the duplicates query, and one unmask."""
    cur = conn.execute(query("first_rows"), {"limit": FIRST_ROWS})
    names = [d.name for d in cur.description]
    rows = cur.fetchall()
    console.print(f"[bold]user_logins[/], the first {len(rows)} rows as an analyst sees them:")
    _show_rows(console, names, rows)

    console.print("[bold]Duplicates[/]: the same device or IP behind more than one login")
    console.print(Syntax(query("duplicates").strip(), "sql", word_wrap=True))
    found = conn.execute(query("duplicates")).fetchall()
    dupes = Table(box=box.SIMPLE)
    dupes.add_column("field")
    dupes.add_column("masked_value", overflow="fold")
    dupes.add_column("logins", justify="right")
    for field, value, logins in found[:TOP_DUPLICATES]:
        dupes.add_row(field, value, str(logins))
    console.print(dupes)
    console.print(
        f"{len(found):,} masked values appear in more than one login"
        + (f" (top {TOP_DUPLICATES} shown)" if len(found) > TOP_DUPLICATES else "")
    )

    if rows:
        mask = rows[0][names.index("masked_ip")]
        original = masker.unmask("ip", mask)
        # As `login-etl unmask` does: the audit row is committed before the value is shown.
        access = Access(os_user(), "demo", "ip", 1, "login-etl demo: show one recovery")
        recorded = record(conn, access)
        console.print("[bold]Unmask[/] (key holders only; the one plaintext this demo prints):")
        console.print(f"  masked_ip {mask}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"  audit     login_etl_pii_access row {recorded.id}: {access.purpose}")
        console.print(f"  original  {escape(original)}", markup=False, soft_wrap=True)
        console.print(
            "[dim]  same as: login-etl unmask --field ip --purpose TEXT <mask>, "
            "with LOGIN_ETL_MASKING_KEY set[/]"
        )


def _show_rows(console: Console, names: list[str], rows: list[tuple[Any, ...]]) -> None:
    """A table when the terminal is wide enough, else psql's expanded display (\\x)."""
    cells = [[Text("NULL", style="dim") if v is None else Text(str(v)) for v in r] for r in rows]
    table = Table(box=box.SIMPLE_HEAD)
    for name in names:
        table.add_column(name, no_wrap=True)
    for row_cells in cells:
        table.add_row(*row_cells)
    natural = Measurement.get(console, console.options.update_width(100_000), table).maximum
    if natural <= console.width:
        console.print(table)
        return
    width = max(len(n) for n in names)
    for n, row_cells in enumerate(cells, 1):
        console.print(Text(f"-[ RECORD {n} ]", style="dim"))
        for name, cell in zip(names, row_cells, strict=True):
            console.print(Text(f"{name:<{width}} | ") + cell, soft_wrap=True)


def keep_running(
    console: Console, pg: LocalPostgres, endpoint: str, queue_url: str, key: str
) -> None:
    """Print how to reach the services, then keep them up until the user is done.

    On a terminal the user gets a shell with every variable set (``PG*`` for
    psql, ``LOGIN_ETL_*`` and AWS's for login-etl), ``psql`` and ``login-etl``
    on its PATH; leaving it stops the services. Otherwise, Ctrl-C stops them.
    """
    env = local_aws_env(endpoint) | {
        "LOGIN_ETL_QUEUE_URL": queue_url,
        "LOGIN_ETL_DATABASE_URL": pg.url,
        "LOGIN_ETL_MASKING_KEY": key,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(pg.port),
        "PGUSER": "postgres",
        "PGDATABASE": "postgres",
    }
    psql = "psql" if shutil.which("psql") else str(pg.bindir / "psql")
    console.rule("[bold]services kept running")
    console.print("PostgreSQL:")
    console.print(f"  {shlex.quote(psql)} {shlex.quote(pg.url)}", markup=False, soft_wrap=True)
    console.print("Environment for psql, login-etl (status, seed, run, unmask) and the AWS CLI:")
    for name, value in env.items():
        console.print(
            f"  export {name}={shlex.quote(value)}", markup=False, highlight=False, soft_wrap=True
        )
    if sys.stdin.isatty():
        _subshell(console, env, pg)
        return
    console.print("Press Ctrl-C to stop them and delete everything.")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping the demo's services")


def _subshell(console: Console, env: dict[str, str], pg: LocalPostgres) -> None:
    """Run the user's shell with `env`, psql and login-etl on PATH, until it exits."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    path = os.pathsep.join([str(Path(sys.executable).parent), str(pg.bindir), os.environ["PATH"]])
    console.print(
        f"A shell ({shell}) with these set, psql and login-etl on its PATH; try\n"
        "  psql -Atc 'SELECT masked_ip FROM user_logins LIMIT 3' | "
        "login-etl unmask --field ip --purpose demo\n"
        "Leave it (exit or Ctrl-D) to stop the services and delete everything.",
        markup=False,
        highlight=False,
    )
    # Ctrl-C belongs to the shell now: a handler (not SIG_IGN) is reset in the child.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        subprocess.run([shell], env={**os.environ, **env, "PATH": path}, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print("stopping the demo's services")
