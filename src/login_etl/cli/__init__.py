"""The `login-etl` command line: thin wrappers over the library.

`app` holds the group, the typed settings flags and the one-line error
handling; `worker` and `pii` add their commands to the group when imported.
"""

from __future__ import annotations

from login_etl.cli import pii, worker
from login_etl.cli.app import PIPELINE, cli

__all__ = ["PIPELINE", "cli", "main", "pii", "worker"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="login-etl")
