"""docs/settings.md and docs/cli.md are what the code generates, and durations share one unit."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from login_etl.cli import cli
from login_etl.config import SPECS
from login_etl.dev import refdocs


@pytest.mark.parametrize("name", sorted(refdocs.GENERATED))
def test_the_generated_reference_is_current(name: str) -> None:
    on_disk = (refdocs.ROOT / name).read_text("utf-8")
    assert on_disk == refdocs.GENERATED[name](), (
        f"{name} is out of date: run `make docs` (python -m login_etl.dev.refdocs --write)"
    )


def test_every_setting_is_in_the_settings_reference() -> None:
    text = refdocs.settings_md()
    for spec in SPECS.values():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{spec.env}` |")]
        assert (spec.flag or "none") in row
        assert ("yes; also" in row) == spec.secret
        if spec.unit:
            assert f"| {spec.unit} |" in row


def _options(group: click.Group) -> list[tuple[str, click.Option]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += [(f"{name} {n}", o) for n, o in _options(command)]
        else:
            found += [(name, p) for p in command.params if isinstance(p, click.Option)]
    return found


def test_every_command_and_flag_is_in_the_cli_reference() -> None:
    text = refdocs.cli_md()
    for command, option in _options(cli):
        assert f"## login-etl {command}\n" in text
        if not option.hidden:
            assert option.opts[0] in text, (command, option.opts)


def test_the_top_level_help_lists_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for code in ("0  done", "1  a failure", "2  bad configuration"):
        assert code in result.output


DURATION_WORDS = {"time", "wait", "timeout", "retention", "older", "seconds", "interval"}


@pytest.mark.parametrize(
    ("command", "option"),
    [(c, o) for c, o in _options(cli) if set((o.name or "").split("_")) & DURATION_WORDS],
    ids=lambda x: x if isinstance(x, str) else x.name,
)
def test_every_duration_flag_is_in_seconds(command: str, option: click.Option) -> None:
    spec = SPECS.get(option.name or "")
    if spec is not None:
        assert spec.unit == "seconds", option.opts
    else:
        assert "seconds" in (option.help or ""), (command, option.opts)
    for other in ("hours", "minutes", "milliseconds", "Hours"):
        assert other not in (option.help or ""), (command, option.opts)
