"""Generate docs/settings.md and docs/cli.md from the code: the settings' declaration and the CLI.

    python -m login_etl.dev.refdocs --write    # rewrite both files (or: make docs)
    python -m login_etl.dev.refdocs --check    # exit 1 naming the stale files

A unit test compares both files with what this module generates, so the
reference cannot drift from `config.Settings` and the click commands.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from login_etl.cli import cli
from login_etl.config import SPECS, Spec

ROOT = Path(__file__).resolve().parents[3]
WIDTH = 100  # help text wrapped as on a 100-column terminal, whatever this one is
REGENERATE = "`make docs` (`python -m login_etl.dev.refdocs --write`)"


def type_text(kind: click.ParamType[Any]) -> str:
    """A setting's type in words, with its range or choices."""
    if isinstance(kind, click.IntRange | click.FloatRange):
        word = "integer" if isinstance(kind, click.IntRange) else "number"
        return f"{word}, {kind.min:g} to {kind.max:g}"
    if isinstance(kind, click.Choice):
        return "one of " + ", ".join(f"`{c}`" for c in kind.choices)
    if kind is click.BOOL:
        return "boolean (`true`/`false`, `1`/`0`, `yes`/`no`)"
    if kind is click.STRING:
        return "text"
    return kind.name


def _default(spec: Spec) -> str:
    if spec.default in (None, ""):
        return "—"
    if isinstance(spec.default, bool):
        return f"`{str(spec.default).lower()}`"
    return f"`{spec.default}`"


def settings_md() -> str:
    """docs/settings.md: every setting with its flag, variable, type, unit, default and secrecy."""
    lines = [
        "# Settings reference",
        "",
        f"Generated from `src/login_etl/config.py` by {REGENERATE}; do not edit by hand.",
        "",
        "A flag wins over its variable, the variable over the default. Durations are in",
        "seconds. Secrets come from the variable or from a file named by `<VARIABLE>_FILE`,",
        "never from a flag (`--database-url` only without a password). libpq's `PG*`",
        "variables apply when no database URL is set; AWS settings come from boto3's",
        "standard chain (`AWS_ENDPOINT_URL`, `AWS_REGION`, credentials). An unknown",
        "`LOGIN_ETL_*` variable is warned about, naming the closest known one.",
        "",
        "| variable | flag | type | unit | default | secret | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in SPECS.values():
        flag = f"`{spec.flag}`" if spec.flag else "none (environment or file)"
        if spec.flag and spec.type is click.BOOL:
            flag = f"`{spec.flag}` / `--no-{spec.flag[2:]}`"
        secret = f"yes; also `{spec.env}_FILE`" if spec.secret else "no"
        help_text = " ".join(spec.help.split()).replace("|", "\\|")
        lines.append(
            f"| `{spec.env}` | {flag} | {type_text(spec.type)} | {spec.unit or '—'} "
            f"| {_default(spec)} | {secret} | {help_text} |"
        )
    lines += [
        "",
        "Other variables login-etl reads: `LOGIN_ETL_PG_BINDIR` (the PostgreSQL server",
        "binaries `login-etl demo` and the tests use) and the Airflow DAG's",
        "`LOGIN_ETL_AIRFLOW_*` ([deploy/airflow](../deploy/airflow)).",
    ]
    return "\n".join(lines) + "\n"


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[str, click.Context]]:
    for name in sorted(group.commands):
        command = group.commands[name]
        sub = click.Context(
            command, info_name=name, parent=ctx, terminal_width=WIDTH, max_content_width=WIDTH
        )
        yield sub.command_path, sub
        if isinstance(command, click.Group):
            yield from _commands(command, sub)


def cli_md() -> str:
    """docs/cli.md: every command's `--help`, in command order."""
    root = click.Context(
        cli,
        info_name="login-etl",
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        **cli.context_settings,
    )
    pages: list[tuple[str, click.Context]] = [("login-etl", root), *_commands(cli, root)]
    lines = [
        "# Command reference",
        "",
        f"Generated from the click commands by {REGENERATE}; do not edit by hand.",
        "Each section is that command's `--help`. Settings flags are described once in",
        "[settings.md](settings.md); errors and their fixes in",
        "[troubleshooting.md](troubleshooting.md).",
        "",
    ]
    lines += [f"- [`{path}`](#{_anchor(path)})" for path, _ in pages]
    for path, ctx in pages:
        lines += ["", f"## {path}", "", "```text", ctx.command.get_help(ctx).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    """GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


GENERATED: dict[str, Any] = {"docs/settings.md": settings_md, "docs/cli.md": cli_md}


def stale(root: Path = ROOT) -> list[str]:
    """The generated files whose text differs from what the code generates now."""
    return [
        name
        for name, make in GENERATED.items()
        if not (root / name).exists() or (root / name).read_text("utf-8") != make()
    ]


def main(argv: list[str] | None = None) -> int:
    """``--write`` rewrites the files; ``--check`` (the default) reports stale ones."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--write"]:
        for name, make in GENERATED.items():
            (ROOT / name).write_text(make(), "utf-8")
            print(f"wrote {name}")
        return 0
    if args in ([], ["--check"]):
        old = stale()
        for name in old:
            print(f"{name} is out of date: run {REGENERATE.replace('`', '')}", file=sys.stderr)
        return 1 if old else 0
    print("usage: python -m login_etl.dev.refdocs [--write | --check]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
