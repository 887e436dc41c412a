"""Commands that reveal or govern PII: keygen, unmask, rejects, rekey, grant.

Everything that shows a plaintext value first commits an audit row
(`--purpose`, `--actor`); see docs/security.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from login_etl.cli.app import F, Failure, cli, load, settings_options
from login_etl.errors import ConfigError


@cli.command()
@click.option(
    "--kms-key-id",
    metavar="KEY",
    help="Have AWS KMS make the key under this KMS key (id, ARN or alias) and print it as "
    "kms:<base64 CiphertextBlob>; the plaintext is never printed.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Write the key to FILE, created readable by its owner only (mode 0400), instead of "
    "printing it; an existing FILE is never overwritten.",
)
def keygen(kms_key_id: str | None, output: Path | None) -> None:
    """Print a new random 512-bit master key for LOGIN_ETL_MASKING_KEY."""
    from login_etl.masking import generate_key
    from login_etl.reveal import escape

    if kms_key_id is None:
        key = generate_key()
    else:
        from login_etl import kms

        key = kms.new_data_key(kms_key_id)
    if output is None:
        click.echo(key)
        return
    _write_key_file(output, key)
    click.echo(f"wrote a new key to {escape(str(output))} (mode 0400)", err=True)


def _write_key_file(path: Path, key: str) -> None:
    """Create `path` with mode 0400 and `key` in it; refuse to replace a file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    except FileExistsError:
        raise ConfigError(
            f"--output {path}: the file exists; keygen never overwrites a key (another "
            "key's masks would become unreadable): choose another FILE"
        ) from None
    except OSError as exc:
        raise ConfigError(f"--output {path}: cannot create it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    os.chmod(path, 0o400)  # a umask cannot widen it, but a filesystem may ignore the create mode


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
    from login_etl import recovery, render
    from login_etl.reveal import escape

    settings = load(flags, *UNMASK)
    why = recovery.Purpose(purpose, actor)
    if user_id is not None:
        if masks:
            raise ConfigError("give MASKs or --user-id, not both")
        fields = [field_name] if field_name else ["ip", "device_id"]
        render.user_logins(recovery.unmask_user(settings, user_id, fields, why), fields)
        return
    if field_name is None:
        raise ConfigError("give --field ip or --field device_id (or --user-id)")
    items = list(masks) if masks else _lines(sys.stdin.read())
    for value in recovery.unmask_masks(settings, field_name, items, why):
        click.echo(escape(value))


def _lines(text: str) -> list[str]:
    """Input lines split on newlines only (as psql prints them), without line ends."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


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
    from login_etl import recovery, render

    settings = load(flags, "database_url", "masking_key", "masking_old_keys")
    counts, recent = recovery.list_rejections(
        settings,
        limit=limit,
        reason=reason,
        bodies=recovery.Purpose(purpose, actor) if show_bodies else None,
        reveal_pii=reveal_pii,
    )
    render.rejections(counts, recent, as_json=as_json)
    _unreadable([(r.message_id, r.unreadable) for r in recent if r.unreadable])


@rejects.command("replay")
@settings_options(
    "database_url", "masking_key", "masking_old_keys", "lake_warehouse", "lake_extra_fields"
)
@click.option("--reason", help="Only rejections with this reason.")
def rejects_replay(reason: str | None, **flags: Any) -> None:
    """Re-run stored rejections through the current rules; load what passes now."""
    from login_etl import service

    settings = load(
        flags,
        "database_url",
        "masking_key",
        "masking_old_keys",
        "lake_warehouse",
        "lake_extra_fields",
    )
    result = service.replay_rejections(settings, reason=reason)
    still = sum(result.still_rejected.values())
    click.echo(f"examined {result.examined}, loaded {result.loaded}, still rejected {still}")
    for why, n in sorted(result.still_rejected.items()):
        click.echo(f"  {why}: {n}")
    _unreadable(result.unreadable)


def _unreadable(bodies: list[tuple[str, str]]) -> None:
    """One line on stderr per sealed body that did not open, then exit 1 if there were any."""
    from login_etl.reveal import escape

    for message_id, why in bodies:
        click.echo(f"login-etl: message {escape(message_id)}: {why}", err=True)
    if bodies:
        raise Failure(f"{len(bodies)} sealed bodies did not open and were left as they are")


@cli.command()
@settings_options("database_url", "masking_key", "masking_old_keys", "lake_warehouse")
def rekey(**flags: Any) -> None:
    """After a key rotation: rewrite old masks and sealed bodies with the primary key.

    With the lake on, the lake's masks are rewritten too (only the files holding
    old masks, each streamed in batches; a snapshot per date).
    """
    from login_etl import service

    settings = load(flags, "database_url", "masking_key", "masking_old_keys", "lake_warehouse")
    result = service.rekey_masks(settings)
    click.echo(f"rewrote {result.rows} rows and {result.bodies} rejected bodies")
    if settings.lake_warehouse:
        click.echo(
            f"lake: rewrote {result.lake_records} records in {result.lake_partitions} partitions "
            f"and {result.lake_outbox} outbox rows"
        )
    if result.unreadable:
        raise Failure(f"{result.unreadable} values were made by no known key and were left as is")


@cli.command("grant")
@settings_options("database_url")
@click.argument("kind", type=click.Choice(["writer", "analyst", "recovery"]))
@click.argument("role")
def grant_role(kind: str, role: str, **flags: Any) -> None:
    """Give an existing PostgreSQL ROLE exactly the writer, analyst or recovery privileges.

    writer: what `login-etl run --no-init-db` needs (INSERT and SELECT on
    user_logins, DML on the service's own tables, temporary tables; no DDL).
    analyst: SELECT on user_logins only. recovery: what unmask and rejects
    list --show-bodies need (SELECT on user_logins and user_logins_rejected,
    EXECUTE on the audit's recording function). Run as the owner, after
    init-db. A role that can read past privileges or raise its own
    (superuser, CREATEROLE, pg_read_all_data, ...) is refused.
    """
    from login_etl import recovery
    from login_etl.reveal import escape

    recovery.grant_role(load(flags, "database_url"), kind, role)
    click.echo(f"role {escape(role)} now has the {kind} privileges")
