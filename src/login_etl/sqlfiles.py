"""Load the SQL statements kept in ``login_etl/sql/*.sql``."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def query(name: str) -> str:
    """Return the text of ``sql/<name>.sql``."""
    return resources.files("login_etl").joinpath("sql", f"{name}.sql").read_text("utf-8")
