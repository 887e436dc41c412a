"""record: one declaration of the record's columns; SQL, lake schema and tuples follow it."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime

import msgspec

from login_etl import record
from login_etl.events import MAX_LENGTHS
from login_etl.fields import STORED
from login_etl.lake import iceberg
from login_etl.masking import MASK_MAX_CHARS
from login_etl.pgsink import Staging
from login_etl.record import COLUMNS, Column, Kept, Source
from login_etl.schema import migrations
from login_etl.sqlfiles import statement
from login_etl.transform import Row
from tests.oracle import USER_LOGINS_DDL

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ROW = Row(
    message_id="m-1",
    user_id="u-1",
    device_type="ios",
    masked_ip="k.ip",
    masked_device_id="k.dev",
    locale=None,
    app_version=2,
    create_date=date(2024, 5, 1),
    sent_at=SENT,
    app_version_raw="2.3.0",
    extra='{"a":1}',
)


def table_columns(text: str, table: str) -> list[tuple[str, str]]:
    """(name, rest of the line) of each column in `CREATE TABLE … table (…);` in `text`."""
    body = re.search(rf"CREATE TABLE IF NOT EXISTS {table}\s*\((.*?)\n\);", text, re.S)
    assert body is not None, table
    out = []
    for line in body.group(1).splitlines():
        line = line.strip().rstrip(",")
        if line and not line.startswith(("--", "PRIMARY KEY")):
            name, _, rest = line.partition(" ")
            out.append((name, " ".join(rest.split())))
    return out


def migration_text(version: int) -> str:
    """The SQL of migration `version` (1 creates user_logins, 2 the lake's outbox)."""
    return migrations()[version - 1].text


def test_user_logins_columns_are_the_brief_ddl_in_order() -> None:
    declared = [(c.name, c.sql_type) for c in record.user_logins()]
    assert declared == table_columns(USER_LOGINS_DDL, "user_logins")
    assert declared == table_columns(migration_text(1), "user_logins")  # what init-db creates


def test_outbox_ddl_has_every_lake_column_by_name_type_and_nullability() -> None:
    outbox = dict(table_columns(migration_text(2), "login_etl_lake_outbox"))
    for own in ("xid", "id", "loaded_at"):  # the outbox's bookkeeping
        outbox.pop(own)
    expected = {}
    for c in record.lake():
        pg = "text" if c.sql_type.startswith("varchar") else c.sql_type  # no limit to check twice
        expected[c.name] = pg if c.nullable else f"{pg} NOT NULL"
    assert outbox == expected


def test_lake_schema_keeps_the_field_ids_of_existing_tables() -> None:
    schema = iceberg.schema_of(COLUMNS)
    assert [(f.field_id, f.name, str(f.field_type), f.required) for f in schema.fields] == [
        (1, "message_id", "string", True),
        (2, "sent_at", "timestamptz", True),
        (3, "create_date", "date", True),
        (4, "user_id", "string", True),
        (5, "device_type", "string", True),
        (6, "masked_ip", "string", True),
        (7, "masked_device_id", "string", True),
        (8, "locale", "string", False),
        (9, "app_version", "int", True),
        (10, "app_version_raw", "string", True),
        (11, "extra", "string", True),
    ]


def test_length_limits_follow_the_declared_varchar_lengths() -> None:
    assert MAX_LENGTHS == {"user_id": 128, "device_type": 32, "locale": 32}
    masked = {record.column(name).length for name in ("masked_ip", "masked_device_id")}
    assert masked == {MASK_MAX_CHARS}
    assert record.column("app_version").length is None
    assert replace(WORKER, sql_type="varchar").length is None
    assert replace(WORKER, sql_type="numeric(10)").length is None  # digits, not characters


def test_declaration_is_consistent() -> None:
    names = record.names(COLUMNS)
    assert len(set(names)) == len(names)
    ids = [c.lake_id for c in COLUMNS]
    assert sorted(ids) == list(range(1, len(ids) + 1))  # Iceberg ids: none reused or skipped
    # Every column is a field of Row, and every stored event field feeds a column.
    assert set(names) <= set(Row.__struct_fields__)
    assert {c.field for c in COLUMNS if c.field} == set(STORED)
    assert {c.source for c in COLUMNS if c.field} <= {Source.EVENT, Source.DERIVED}


def test_staging_tuples_are_the_rows_values_by_name() -> None:
    plain, lake = Staging.of(lake=False), Staging.of(lake=True)
    expected = ("m-1", "u-1", "ios", "k.ip", "k.dev", None, 2, date(2024, 5, 1), SENT)
    assert plain.values(ROW) == expected
    assert lake.values(ROW) == (*expected, "2.3.0", '{"a":1}')
    assert plain.types == [
        *("text", "varchar", "varchar", "varchar", "varchar", "varchar"),
        *("int4", "date", "timestamptz"),
    ]
    assert lake.types == [*plain.types, "text", "text"]


def column_list(text: str, before: str) -> list[str]:
    """The quoted names in the parenthesised list after `before` in `text`."""
    found = re.search(re.escape(before) + r"\s*\(([^)]*)\)", text)
    assert found is not None, before
    return re.findall(r'"(\w+)"', found.group(1))


def test_statements_name_the_declared_columns() -> None:
    table, lake = list(record.names(record.user_logins())), list(record.names(record.lake()))
    plain, on = Staging.of(lake=False), Staging.of(lake=True)
    assert column_list(plain.copy, "COPY login_etl_staging") == ["message_id", *table, "sent_at"]
    assert column_list(on.copy, "COPY login_etl_staging") == list(record.names(COLUMNS))
    defs = re.search(r"login_etl_staging \((.*)\) ON COMMIT", on.create)
    assert defs is not None
    assert defs.group(1) == ", ".join(f'"{c.name}" {c.sql_type}' for c in COLUMNS)
    for load in (plain.load, on.load):
        assert column_list(load, "INSERT INTO user_logins") == table
        assert re.findall(r'"(\w+)"', load.split("SELECT", 2)[2].split("FROM")[0]) == table
    assert column_list(on.load, "INSERT INTO login_etl_lake_outbox") == lake
    insert = statement("lake_outbox_insert", lake=record.lake())
    assert column_list(insert, "INSERT INTO login_etl_lake_outbox") == lake
    assert re.findall(r"%\((\w+)\)s", insert) == lake
    replay = statement("replay_insert", user_logins=record.user_logins())
    assert column_list(replay, "INSERT INTO user_logins") == table
    assert re.findall(r"%\((\w+)\)s", replay) == table
    take = statement("lake_outbox_take", lake=record.lake())
    assert re.findall(r'"(\w+)"', take) == lake


# -- adding a column: the declaration is the one Python edit ----------------------


class WideRow(Row, frozen=True, gc=False):
    """A Row with the field a new column would add (where its value comes from)."""

    worker: str = "w-7"


WORKER = Column("worker", "text", "string", 12, Kept.LAKE, Source.MESSAGE)
VARIANT = (*COLUMNS, WORKER)


def test_a_new_lake_column_reaches_staging_copy_tuples_outbox_and_lake_schema() -> None:
    wide = WideRow(**msgspec.structs.asdict(ROW))
    staging = Staging.of(VARIANT, lake=True)
    assert '"worker" text' in staging.create
    assert column_list(staging.copy, "COPY login_etl_staging")[-1] == "worker"
    assert staging.types[-1] == "text"
    assert staging.values(wide)[-1] == "w-7"
    assert column_list(staging.load, "INSERT INTO login_etl_lake_outbox")[-1] == "worker"
    assert "worker" not in column_list(staging.load, "INSERT INTO user_logins")
    # Off the lake, a lake-only column is neither copied nor loaded.
    plain = Staging.of(VARIANT, lake=False)
    assert "worker" not in plain.copy and "worker" not in plain.load
    assert len(plain.values(wide)) == len(plain.types) == 9
    field = iceberg.schema_of(VARIANT).find_field("worker")
    assert (field.field_id, str(field.field_type), field.required) == (12, "string", True)


def test_a_nullable_int_column_gets_int4_and_an_optional_lake_field() -> None:
    score = Column("score", "integer", "int", 12, Kept.LAKE, Source.DERIVED, nullable=True)
    staging = Staging.of((*COLUMNS, score), lake=True)
    assert staging.types[-1] == "int4"
    field = iceberg.schema_of((*COLUMNS, score)).find_field("score")
    assert (str(field.field_type), field.required) == ("int", False)


def test_values_of_one_column_is_still_a_tuple() -> None:
    assert record.values_of([record.column("user_id")])(ROW) == ("u-1",)
    assert record.params_of(ROW, [record.column("locale")]) == {"locale": None}


def test_copy_type_drops_the_length_and_names_integer_int4() -> None:
    assert replace(WORKER, sql_type="varchar(40)").copy_type == "varchar"
    assert replace(WORKER, sql_type="integer").copy_type == "int4"
    assert replace(WORKER, sql_type="timestamptz").copy_type == "timestamptz"


def test_the_core_record_imports_no_lake_library() -> None:
    code = (
        "import sys, login_etl.record, login_etl.transform, login_etl.extra; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pyiceberg', 'pyarrow', 'psycopg') or m.startswith('login_etl.lake')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
