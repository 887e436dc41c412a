"""`python -m login_etl` runs the CLI."""

from __future__ import annotations

from login_etl.cli import main

main()
