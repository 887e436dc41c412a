"""docs/troubleshooting.md quotes lines the code really prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "troubleshooting.md").read_text("utf-8")


def _source_text() -> str:
    """Every module's text, adjacent string literals joined (as Python joins them)."""
    text = "\n".join(p.read_text("utf-8") for p in (ROOT / "src" / "login_etl").rglob("*.py"))
    return re.sub(r"\"\s*\n\s*f?\"", "", text)


SOURCE = _source_text()


def _quoted() -> list[str]:
    """The code spans of each table row's first cell, cut at each … (a value left out)."""
    pieces = []
    for line in PAGE.splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split(" | ")[0]
        for span in re.findall(r"`([^`]+)`", first):
            pieces += [p.strip() for p in span.split("…") if len(p.strip()) > 3]
    return pieces


# click's own words for a mistyped flag or value, not in our source
CLICK = {"No such option", "is not a valid integer", "is not one of"}


@pytest.mark.parametrize("words", _quoted())
def test_each_quoted_line_is_one_the_code_prints(words: str) -> None:
    assert words in SOURCE or words in CLICK, (
        f"{words!r} (docs/troubleshooting.md) is printed nowhere in src/"
    )


@pytest.mark.parametrize(
    "must",
    [
        "cannot serve metrics on",
        "may not create or alter tables",
        "cannot connect to PostgreSQL at",
        "cannot reach",
        "EndpointConnectionError",
        "is not a login-etl setting",
        "is readable by every user",
    ],
)
def test_the_errors_users_meet_first_are_listed(must: str) -> None:
    assert must in PAGE
