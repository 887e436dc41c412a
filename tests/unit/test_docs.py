"""The README documents every setting and every command."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from login_etl.cli import cli
from login_etl.config import SPECS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text("utf-8")


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.env)
def test_every_setting_is_in_the_configuration_table(spec) -> None:
    if spec.flag is None:
        assert f"| `{spec.env}` | none (env or `_FILE`) |" in README
        assert f"`{spec.env}_FILE`" in README
    else:
        assert f"| `{spec.env}` | `{spec.flag}" in README
    if spec.secret:
        assert f"`{spec.env}_FILE`" in README


def _commands(group: click.Group, prefix: str = "") -> list[str]:
    names = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            names += _commands(cmd, f"{prefix}{name} ")
        else:
            names.append(f"{prefix}{name}")
    return names


@pytest.mark.parametrize("command", _commands(cli))
def test_every_command_is_mentioned(command: str) -> None:
    assert f"login-etl {command}" in README


def test_faq_links_point_at_real_files() -> None:
    faq = (ROOT / "docs" / "faq.md").read_text("utf-8")
    import re

    targets = re.findall(r"\]\((\.\./[^)#]+)", faq)
    assert len(targets) >= 5  # the FAQ points at the real code and files
    for target in targets:
        assert (ROOT / "docs" / target).resolve().exists(), target


def _modules() -> list[str]:
    package = ROOT / "src" / "login_etl"
    return sorted(
        str(path.relative_to(ROOT))
        for path in package.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )


@pytest.mark.parametrize("module", _modules())
def test_the_code_map_names_every_module(module: str) -> None:
    architecture = README[README.index("## Architecture") : README.index("## More")]
    assert f"]({module})" in architecture
