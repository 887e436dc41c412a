"""A column added to the record's declaration loads end to end, given its migration."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg

from login_etl.pgsink import Staging
from login_etl.postgres import init_schema
from login_etl.record import COLUMNS, Column, Kept, Source
from login_etl.transform import Row

SENT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class WideRow(Row, frozen=True, gc=False):
    """A Row with the field the new column's value comes from."""

    worker: str = ""


WORKER = Column("worker", "text", "string", 12, Kept.LAKE, Source.MESSAGE)


def wide_row(message_id: str, worker: str) -> WideRow:
    return WideRow(
        message_id=message_id,
        user_id="u-1",
        device_type="ios",
        masked_ip="k.ip",
        masked_device_id="k.dev",
        locale="RU",
        app_version=2,
        create_date=date(2024, 5, 1),
        sent_at=SENT,
        app_version_raw="2.3.0",
        extra="{}",
        worker=worker,
    )


def test_a_declared_lake_column_is_staged_and_reaches_the_outbox(database_url: str) -> None:
    staging = Staging.of((*COLUMNS, WORKER), lake=True)
    with psycopg.connect(database_url) as conn:
        init_schema(conn)
        # The migration a new column needs: the declaration shapes statements, not tables.
        conn.execute("ALTER TABLE login_etl_lake_outbox ADD COLUMN worker text NOT NULL")
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(staging.create)
            with cur.copy(staging.copy) as copy:
                copy.set_types(staging.types)
                for row in (wide_row("m-1", "w-1"), wide_row("m-2", "w-2")):
                    copy.write_row(staging.values(row))
            cur.execute(staging.load)
        outbox = conn.execute(
            "SELECT message_id, worker, user_id, locale FROM login_etl_lake_outbox ORDER BY 1"
        ).fetchall()
        assert outbox == [("m-1", "w-1", "u-1", "RU"), ("m-2", "w-2", "u-1", "RU")]
        loaded = conn.execute("SELECT count(*), min(app_version) FROM user_logins").fetchone()
        assert loaded == (2, 2)
