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


# -- the README's worked example and demo transcript are what the code produces -------


def test_the_readme_example_row_is_what_transform_makes() -> None:
    import json
    import re
    from datetime import UTC, datetime

    from login_etl.masking import Masker
    from login_etl.source import Message
    from login_etl.transform import Row, transform

    section = README[README.index("### One event and the row it becomes") :]
    body = re.search(r"```json\n(.*?)\n```", section, re.S).group(1)  # type: ignore[union-attr]
    shown = dict(re.findall(r"^\| (\w+) \| `([^`]*)` \|$", section, re.M))
    sent_at = datetime(2026, 11, 26, 8, 30, tzinfo=UTC)
    row = transform(Message("m-1", "r", body, sent_at), Masker(bytes(range(64))))
    assert isinstance(row, Row)
    assert json.loads(body)["ip"] not in section.split("```", 2)[2]  # only masks below
    made = {
        "user_id": row.user_id,
        "device_type": row.device_type,
        "masked_ip": row.masked_ip,
        "masked_device_id": row.masked_device_id,
        "locale": row.locale,
        "app_version": str(row.app_version),
        "create_date": str(row.create_date),
    }
    assert shown == made


def test_the_readme_demo_transcript_is_what_the_seeded_demo_loads() -> None:
    import re

    from login_etl.dev.seed import synthetic
    from tests.oracle import outcome

    makefile = (ROOT / "Makefile").read_text("utf-8")
    seed = int(re.search(r"^DEMO_ARGS \?= --random-seed (\d+)$", makefile, re.M).group(1))  # type: ignore[union-attr]
    transcript = README[README.index("$ make demo") : README.index("## Point it at real services")]
    assert f"synthetic events (seed {seed})" in transcript
    sent = int(re.search(r"messages sent\s+([\d,]+)", transcript).group(1).replace(",", ""))  # type: ignore[union-attr]
    valid, reasons = outcome(synthetic(sent, seed))

    def shown(label: str) -> int:
        found = re.search(rf"^\s+{re.escape(label)}\s+([\d,]+)$", transcript, re.M)
        assert found, label
        return int(found.group(1).replace(",", ""))

    assert shown("loaded") == len(valid)
    assert shown("rejected") == sum(reasons.values())
    for reason, n in reasons.items():
        assert shown(reason) == n, reason
