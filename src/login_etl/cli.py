"""The `login-etl` command line: thin wrappers over the library.

Each setting is a flag and a ``LOGIN_ETL_*`` variable (named in ``--help``).
Errors print one line; bad configuration exits 2, other failures exit 1.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from login_etl import __version__, logs, redact, render, service
from login_etl.config import ALIASES, SPECS, Settings, Spec
from login_etl.errors import ConfigError, LoginEtlError
from login_etl.masking import generate_key
from login_etl.reveal import escape

F = TypeVar("F", bound=Callable[..., Any])

PIPELINE = (
    "queue_url",
    "database_url",
    "masking_key",
    "masking_old_keys",
    "concurrency",
    "batch_size",
    "batch_wait_seconds",
    "wait_time",
    "max_in_flight",
    "max_retry_time",
    "shutdown_timeout",
    "metrics_port",
    "lake_warehouse",
    "init_db",
    "log_format",
    "log_level",
)


class Failure(click.ClickException):
    """One clear line on stderr and exit 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        """Print ``login-etl: error: …``."""
        click.echo(f"login-etl: error: {redact.scrub(self.message)}", err=True)


class BadConfig(Failure):
    """Invalid configuration: one line and exit 2."""

    exit_code = 2


class Command(click.Command):
    """A command whose help ends with the secrets it reads from the environment only."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List env-only secrets (and their *_FILE form) after the options."""
        names = getattr(self.callback, "env_only", ())
        if names:
            with formatter.section("Secrets (environment only, never flags)"):
                formatter.write_dl([(f"{SPECS[n].env}[_FILE]", _help(SPECS[n])) for n in names])
        super().format_epilog(ctx, formatter)


class Group(click.Group):
    """Translates our errors into one-line failures."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; ConfigError → exit 2, other LoginEtlError → exit 1."""
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        except LoginEtlError as exc:
            raise Failure(str(exc)) from None
        except click.UsageError as exc:
            # A typo in a flag or a bad value (flag or env): one line, exit 2.
            raise BadConfig(exc.format_message()) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # An unforeseen error: name it, but print no message text, which
            # could quote data. The traceback goes to the debug log.
            logging.getLogger("login_etl").debug("unexpected error", exc_info=True)
            state = getattr(exc, "sqlstate", None)
            detail = f" (SQLSTATE {state})" if state else ""
            raise Failure(f"unexpected {type(exc).__name__}{detail}") from None


def _help(spec: Spec) -> str:
    extra = [f"unit: {spec.unit}"] if spec.unit else []
    if spec.default not in (None, ""):
        default = str(spec.default).lower() if isinstance(spec.default, bool) else spec.default
        extra.append(f"default: {default}")
    return f"{spec.help} [{'; '.join(extra)}]" if extra else spec.help


def settings_options(*names: str) -> Callable[[F], F]:
    """One typed flag per named setting; `--help` shows its type, unit, default and variable.

    Secrets that only the environment may carry get no flag. Values from the
    environment are parsed again by `Settings.load`, which also reads
    ``*_FILE`` secrets and deprecated names.
    """

    def decorate(fn: F) -> F:
        fn.env_only = [n for n in names if SPECS[n].flag is None]  # type: ignore[attr-defined]
        for name in reversed(names):
            spec = SPECS[name]
            if spec.flag is None:
                continue
            if spec.type is click.BOOL:
                flag = f"{spec.flag}/--no-{spec.flag[2:]}"
                fn = click.option(
                    flag, name, default=None, envvar=spec.env, show_envvar=True, help=_help(spec)
                )(fn)
            else:
                fn = click.option(
                    spec.flag,
                    name,
                    type=spec.type,
                    default=None,
                    envvar=spec.env,
                    show_envvar=True,
                    help=_help(spec),
                )(fn)
            alias = ALIASES.get(name)
            if alias is not None:
                fn = click.option(
                    alias.flag, alias.old, type=alias.type, hidden=True, help=alias.note
                )(fn)
        return fn

    return decorate


def load(flags: dict[str, Any], *names: str) -> Settings:
    """Settings from the flags given on the command line (popped from `flags`) and the env."""
    ctx = click.get_current_context()
    given = {}
    for name in names:
        for key in (name, getattr(ALIASES.get(name), "old", None)):
            if key is None or key not in flags:
                continue
            value = flags.pop(key)
            if ctx.get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE:
                given[key] = value
    return Settings.load(given)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="login-etl")
def cli() -> None:
    """Drain login events from SQS, mask PII, load them into PostgreSQL exactly once."""
    # Every command logs in the configured format; `run` also takes the flags.
    env = {n: os.environ.get(SPECS[n].env, "").strip().lower() for n in ("log_format", "log_level")}
    fmt = env["log_format"] if env["log_format"] in ("text", "json") else "text"
    level = (
        env["log_level"] if env["log_level"] in ("debug", "info", "warning", "error") else "info"
    )
    logs.configure(fmt, level)


@cli.command()
@settings_options(*PIPELINE)
@click.option("--drain", is_flag=True, help="Exit 0 once the queue has no visible messages.")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after N messages.")
def run(drain: bool, max_messages: int | None, **flags: Any) -> None:
    """Consume the queue into PostgreSQL until stopped (SIGINT/SIGTERM) or drained."""
    settings = load(flags, *PIPELINE)
    logs.configure(settings.log_format, settings.log_level)
    service.run(settings, drain=drain, max_messages=max_messages)


@cli.command("init-db")
@settings_options("database_url")
def init_db(**flags: Any) -> None:
    """Create user_logins (if absent) and the service's own tables."""
    service.init_db(load(flags, "database_url"))
    click.echo(
        "schema ready: user_logins, user_logins_rejected, login_etl_ledger, "
        "login_etl_pii_access, and the lake's outbox and catalog"
    )


@cli.command()
@click.option(
    "--kms-key-id",
    metavar="KEY",
    help="Have AWS KMS make the key under this KMS key (id, ARN or alias) and print it as "
    "kms:<base64 CiphertextBlob>; the plaintext is never printed.",
)
def keygen(kms_key_id: str | None) -> None:
    """Print a new random 512-bit master key for LOGIN_ETL_MASKING_KEY."""
    if kms_key_id is None:
        click.echo(generate_key())
        return
    from login_etl import kms

    click.echo(kms.new_data_key(kms_key_id))


def purpose_options(*, required: bool) -> Callable[[F], F]:
    """--purpose and --actor: what every command that reveals PII records first."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "--actor",
            metavar="NAME",
            help="Who asks, for the audit (default: the OS user).",
        )(fn)
        return click.option(
            "--purpose",
            metavar="TEXT",
            required=required,
            help="Why PII is revealed (a ticket, a case): recorded in login_etl_pii_access "
            "before anything is shown.",
        )(fn)

    return decorate


UNMASK = ("database_url", "masking_key", "masking_old_keys")


@cli.command()
@settings_options(*UNMASK)
@click.option(
    "--field",
    "field_name",
    type=click.Choice(["ip", "device_id"]),
    help="The column the masks come from (with --user-id: only this column).",
)
@click.option("--user-id", metavar="ID", help="Reveal this user's rows instead of given masks.")
@purpose_options(required=True)
@click.argument("masks", nargs=-1)
def unmask(
    field_name: str | None,
    user_id: str | None,
    purpose: str,
    actor: str | None,
    masks: tuple[str, ...],
    **flags: Any,
) -> None:
    """Print the original value of each MASK (masks from stdin if none given).

    Exactly one line per mask, in order; an empty input line gives an empty
    line. With --user-id: one tab-separated line per row of that user
    (create_date, device_type, ip, device_id), after a header. Control
    characters are printed escaped (\\xNN), a backslash as \\\\. An audit
    row is committed before anything is printed.
    """
    settings = load(flags, *UNMASK)
    why = service.Purpose(purpose, actor)
    if user_id is not None:
        if masks:
            raise ConfigError("give MASKs or --user-id, not both")
        fields = [field_name] if field_name else ["ip", "device_id"]
        render.user_logins(service.unmask_user(settings, user_id, fields, why), fields)
        return
    if field_name is None:
        raise ConfigError("give --field ip or --field device_id (or --user-id)")
    items = list(masks) if masks else _lines(sys.stdin.read())
    for value in service.unmask_masks(settings, field_name, items, why):
        click.echo(escape(value))


def _lines(text: str) -> list[str]:
    """Input lines split on newlines only (as psql prints them), without line ends."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


@cli.command()
@settings_options("queue_url")
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
    from login_etl.dev.seed import read_records, synthetic

    if (file is None) == (count is None):
        raise ConfigError("give either FILE or --synthetic N")
    bodies = read_records(file) if file is not None else synthetic(count or 0, random_seed)
    sent = service.seed(load(flags, "queue_url"), bodies)
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
@settings_options("queue_url", "database_url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for machines).")
def status(as_json: bool, **flags: Any) -> None:
    """Queue depth, rows loaded, rejections by reason and the last load time."""
    import json

    from rich.console import Console

    from login_etl import status as report

    found = report.collect(load(flags, "queue_url", "database_url"))
    if as_json:
        click.echo(json.dumps(report.to_dict(found)))
    else:
        report.render(found, Console())


@cli.group()
def rejects() -> None:
    """Inspect and replay rejected messages."""


@rejects.command("list")
@settings_options("database_url", "masking_key", "masking_old_keys")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="How many recent rejections to show.",
)
@click.option("--reason", help="Only this reason.")
@click.option(
    "--show-bodies",
    is_flag=True,
    help="Decrypt and show bodies, ip and device_id masked (needs the key and --purpose).",
)
@click.option("--reveal-pii", is_flag=True, help="With --show-bodies: ip and device_id in clear.")
@purpose_options(required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def rejects_list(
    limit: int,
    reason: str | None,
    show_bodies: bool,
    reveal_pii: bool,
    purpose: str | None,
    actor: str | None,
    as_json: bool,
    **flags: Any,
) -> None:
    """Rejections by reason and the most recent message ids."""
    settings = load(flags, "database_url", "masking_key", "masking_old_keys")
    counts, recent = service.list_rejections(
        settings,
        limit=limit,
        reason=reason,
        bodies=service.Purpose(purpose, actor) if show_bodies else None,
        reveal_pii=reveal_pii,
    )
    render.rejections(counts, recent, as_json=as_json)


@rejects.command("replay")
@settings_options("database_url", "masking_key", "masking_old_keys", "lake_warehouse")
@click.option("--reason", help="Only rejections with this reason.")
def rejects_replay(reason: str | None, **flags: Any) -> None:
    """Re-run stored rejections through the current rules; load what passes now."""
    settings = load(flags, "database_url", "masking_key", "masking_old_keys", "lake_warehouse")
    result = service.replay_rejections(settings, reason=reason)
    still = sum(result.still_rejected.values())
    click.echo(f"examined {result.examined}, loaded {result.loaded}, still rejected {still}")
    for why, n in sorted(result.still_rejected.items()):
        click.echo(f"  {why}: {n}")


@cli.command()
@settings_options("queue_url", "database_url")
@click.option(
    "--retention",
    type=click.IntRange(min=60),
    help="Queue retention in seconds (default: read from the queue).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be pruned.")
def prune(retention: int | None, dry_run: bool, **flags: Any) -> None:
    """Forget ledger entries older than the queue's retention period (plus a day)."""
    settings = load(flags, "queue_url", "database_url")
    n, secs = service.prune_ledger(settings, retention=retention, dry_run=dry_run)
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} {n} ledger entries (retention {secs}s + margin)")


@cli.command()
@settings_options("database_url", "masking_key", "masking_old_keys", "lake_warehouse")
def rekey(**flags: Any) -> None:
    """After a key rotation: rewrite old masks and sealed bodies with the primary key.

    With the lake on, the lake's masks are rewritten too (a partition at a time).
    """
    settings = load(flags, "database_url", "masking_key", "masking_old_keys", "lake_warehouse")
    result = service.rekey_masks(settings)
    click.echo(f"rewrote {result.rows} rows and {result.bodies} rejected bodies")
    unreadable = result.unreadable
    if settings.lake_warehouse:
        from login_etl.lake.upkeep import rekey as rekey_lake

        lake = rekey_lake(settings, settings.masker())
        click.echo(
            f"lake: rewrote {lake.rows} records in {lake.partitions} partitions "
            f"and {lake.outbox} outbox rows"
        )
        unreadable += lake.unreadable
    if unreadable:
        raise Failure(f"{unreadable} values were made by no known key and were left as is")


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
    "--older-than",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Hours: expire snapshots and remove orphan files older than this.",
)
@click.option(
    "--retain-last",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Snapshots always kept, however old.",
)
def lake_maintain(older_than: float, retain_last: int, **flags: Any) -> None:
    """Compact small files, expire old snapshots, delete orphan files (daily)."""
    from datetime import timedelta

    from login_etl.lake.upkeep import maintain

    result = maintain(
        load(flags, "database_url", "lake_warehouse"),
        older_than=timedelta(hours=older_than),
        retain_last=retain_last,
    )
    click.echo(
        f"compacted {result.compacted} partitions, expired {result.expired} snapshots, "
        f"deleted {result.deleted_files} files; {result.data_files} data files, "
        f"{result.data_bytes:,} bytes"
    )


@cli.command("grant")
@settings_options("database_url")
@click.argument("kind", type=click.Choice(["writer", "analyst"]))
@click.argument("role")
def grant_role(kind: str, role: str, **flags: Any) -> None:
    """Give an existing PostgreSQL ROLE exactly the writer or the analyst privileges.

    writer: what `login-etl run --no-init-db` needs (INSERT and SELECT on
    user_logins, DML on the service's own tables, temporary tables; no DDL).
    analyst: SELECT on user_logins only. Run as the owner, after init-db.
    """
    service.grant_role(load(flags, "database_url"), kind, role)
    click.echo(f"role {escape(role)} now has the {kind} privileges")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="login-etl")
