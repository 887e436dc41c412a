"""Commands that run the service and move data: run, init-db, seed, demo,
status, prune, backfill and the lake's flush and maintain."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from login_etl import logs
from login_etl.cli.app import PIPELINE, cli, load, settings_options
from login_etl.errors import ConfigError
from login_etl.lake import TARGET_FILE_MB


@cli.command()
@settings_options(*PIPELINE)
@click.option("--drain", is_flag=True, help="Exit 0 once the queue has no visible messages.")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after N messages.")
def run(drain: bool, max_messages: int | None, **flags: Any) -> None:
    """Consume the queue into PostgreSQL until stopped (SIGINT/SIGTERM) or drained."""
    from login_etl import service

    settings = load(flags, *PIPELINE)
    logs.configure(settings.log_format, settings.log_level)
    service.run(settings, drain=drain, max_messages=max_messages)


@cli.command("init-db")
@settings_options("database_url")
def init_db(**flags: Any) -> None:
    """Create user_logins (if absent) and the service's own tables."""
    from login_etl import service

    service.init_db(load(flags, "database_url"))
    click.echo(
        "schema ready: user_logins, user_logins_rejected, login_etl_ledger, "
        "login_etl_pii_access, and the lake's outbox and catalog"
    )


@cli.command()
@settings_options("queue_url", "sqs_protocol")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--synthetic",
    "count",
    type=click.IntRange(min=1),
    help="Send N generated events instead of a file.",
)
@click.option("--random-seed", type=int, help="Seed for --synthetic (repeatable runs).")
def seed(file: Path | None, count: int | None, random_seed: int | None, **flags: Any) -> None:
    """Send JSON records (array or JSON lines, optionally gzipped) to the queue."""
    from login_etl import service
    from login_etl.dev.seed import read_records, synthetic

    if (file is None) == (count is None):
        raise ConfigError("give either FILE or --synthetic N")
    bodies = read_records(file) if file is not None else synthetic(count or 0, random_seed)
    sent = service.seed(load(flags, "queue_url", "sqs_protocol"), bodies)
    click.echo(f"sent {sent} messages")


@cli.command()
@click.option(
    "--synthetic",
    "count",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Generate N events (ignored with --file).",
)
@click.option("--random-seed", type=int, help="Seed for the generator (repeatable runs).")
@click.option(
    "--file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Send the records of this JSON array / JSON-lines file (gzip ok) instead.",
)
@click.option("--keep", is_flag=True, help="Keep PostgreSQL and the queue up until Ctrl-C.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    metavar="N",
    help="Receiver threads.",
)
def demo(
    count: int, random_seed: int | None, file: Path | None, keep: bool, concurrency: int
) -> None:
    """Run the whole pipeline on throwaway local services and show the result."""
    from rich.console import Console

    from login_etl.dev import demo as demo_run

    options = demo_run.DemoOptions(count, random_seed, file, keep, concurrency)
    sys.exit(demo_run.run(Console(), options))


@cli.command()
@settings_options("queue_url", "sqs_protocol", "database_url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def status(as_json: bool, **flags: Any) -> None:
    """Queue depth, rows loaded, rejections by reason and the last load time."""
    import json

    from login_etl import render
    from login_etl import status as report

    found = report.collect(load(flags, "queue_url", "sqs_protocol", "database_url"))
    if as_json:
        click.echo(json.dumps(report.to_dict(found)))
    else:
        report.render(found, render.console())


@cli.command()
@settings_options("queue_url", "sqs_protocol", "database_url")
@click.option(
    "--retention",
    type=click.IntRange(min=60),
    help="Queue retention in seconds (default: read from the queue).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be pruned.")
@click.option("--force", is_flag=True, help="Allow a --retention shorter than the queue's own.")
def prune(retention: int | None, dry_run: bool, force: bool, **flags: Any) -> None:
    """Forget ledger entries older than the queue's retention period (plus a day)."""
    from login_etl import service

    settings = load(flags, "queue_url", "sqs_protocol", "database_url")
    n, secs = service.prune_ledger(settings, retention=retention, dry_run=dry_run, force=force)
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} {n} ledger entries (retention {secs}s + margin)")


@cli.command()
@settings_options("database_url", "lake_warehouse")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="First create_date (YYYY-MM-DD).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Last create_date (YYYY-MM-DD).")
@click.option("--force", is_flag=True, help="Allow dates before the lake's first record.")
def backfill(since: Any, until: Any, force: bool, **flags: Any) -> None:
    """Rebuild user_logins rows of the chosen create_dates from the lake (one transaction).

    Without dates: every date in the lake. Running it twice gives the same table.
    """
    from login_etl.lake.backfill import backfill as run_backfill

    result = run_backfill(
        load(flags, "database_url", "lake_warehouse"),
        since=since.date() if since else None,
        until=until.date() if until else None,
        force=force,
    )
    span = f"{result.dates[0]}..{result.dates[-1]}" if result.dates else "no dates"
    rate = result.inserted / result.seconds if result.seconds else 0.0
    click.echo(
        f"backfilled {len(result.dates)} dates ({span}): deleted {result.deleted} rows, "
        f"inserted {result.inserted} ({result.from_lake} from the lake, "
        f"{result.from_outbox} from the outbox) in {result.seconds:.1f}s ({rate:,.0f} rows/s)"
    )


@cli.group()
def lake() -> None:
    """The lake stage: every loaded event in Apache Iceberg (docs/lake.md)."""


@lake.command("flush")
@settings_options("database_url", "lake_warehouse", "max_retry_time")
def lake_flush(**flags: Any) -> None:
    """Append every final outbox row to the lake now (one pass of the writer)."""
    from login_etl.lake.writer import flush_once

    result = flush_once(load(flags, "database_url", "lake_warehouse", "max_retry_time"))
    if result.busy:
        click.echo(f"another worker is writing to the lake; {result.outbox} rows in the outbox")
        return
    click.echo(
        f"appended {result.appended} records in {result.commits} commits; "
        f"{result.outbox} rows left in the outbox"
    )


@lake.command("maintain")
@settings_options("database_url", "lake_warehouse")
@click.option(
    "--older-than-seconds",
    type=click.FloatRange(min=0),
    default=86_400.0,
    show_default=True,
    help="Expire snapshots and remove orphan files older than this many seconds (a day).",
)
@click.option(
    "--retain-last",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Snapshots always kept, however old.",
)
@click.option(
    "--target-file-mb",
    type=click.FloatRange(min=0.001),
    default=float(TARGET_FILE_MB),
    show_default=True,
    help="Compaction merges files smaller than 3/4 of this into files of at most this size.",
)
def lake_maintain(
    older_than_seconds: float, retain_last: int, target_file_mb: float, **flags: Any
) -> None:
    """Compact small files, expire old snapshots, delete orphan files (daily)."""
    from datetime import timedelta

    from login_etl.lake.upkeep import maintain

    result = maintain(
        load(flags, "database_url", "lake_warehouse"),
        older_than=timedelta(seconds=older_than_seconds),
        retain_last=retain_last,
        target_file_mb=target_file_mb,
    )
    click.echo(
        f"compacted {result.compacted} partitions ({result.merged} files into "
        f"{result.written}), expired {result.expired} snapshots, "
        f"deleted {result.deleted_files} files; {result.data_files} data files, "
        f"{result.data_bytes:,} bytes"
    )
