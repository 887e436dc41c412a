"""grants.refusal: which memberships and attributes make a set of privileges mean less.

Rows are what sql/grant_memberships.sql returns: (name, SUPERUSER,
CREATEROLE, BYPASSRLS, REPLICATION), the role itself first. The same rules
run against real roles in tests/integration/test_grants.py.
"""

from __future__ import annotations

import pytest

from login_etl.grants import refusal

PLAIN = (False, False, False, False)


def me(*flags: bool) -> tuple[object, ...]:
    return ("bi_reader", *(flags or PLAIN))


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([me(True, False, False, False)], "that role has SUPERUSER"),
        ([me(False, True, False, False)], "that role has CREATEROLE"),
        ([me(False, False, True, False)], "that role has BYPASSRLS"),
        ([me(False, False, False, True)], "that role has REPLICATION"),
        ([me(), ("ops", False, True, False, False)], "member of ops, which has CREATEROLE"),
        ([me(), ("pg_read_all_data", *PLAIN)], "member of pg_read_all_data"),
        ([me(), ("pg_write_all_data", *PLAIN)], "member of pg_write_all_data"),
        ([me(), ("pg_read_server_files", *PLAIN)], "member of pg_read_server_files"),
        ([me(), ("pg_write_server_files", *PLAIN)], "member of pg_write_server_files"),
        ([me(), ("pg_execute_server_program", *PLAIN)], "member of pg_execute_server_program"),
        ([me(), ("pg_monitor", *PLAIN), ("pg_read_all_stats", *PLAIN)], "pg_read_all_stats"),
        ([me(), ("pg_database_owner", *PLAIN)], "member of pg_database_owner"),
        # An attribute anywhere is named before a predefined role.
        (
            [me(), ("a_role", *PLAIN), ("pg_read_all_data", *PLAIN), ("z", True, *PLAIN[1:])],
            "member of z, which has SUPERUSER",
        ),
    ],
)
def test_refused(rows, fragment) -> None:
    why = refusal(rows)
    assert why is not None and fragment in why and "\n" not in why


@pytest.mark.parametrize(
    "rows",
    [
        [me()],
        [me(), ("pg_read_all_settings", *PLAIN), ("pg_stat_scan_tables", *PLAIN)],
        [me(), ("pg_signal_backend", *PLAIN), ("pg_checkpoint", *PLAIN), ("team", *PLAIN)],
    ],
)
def test_accepted(rows) -> None:
    assert refusal(rows) is None


def test_a_role_name_cannot_add_a_line() -> None:
    why = refusal([me(), ("evil\nINFO granted", False, True, False, False)])
    assert why is not None and "\n" not in why and "evil\\x0aINFO granted" in why
