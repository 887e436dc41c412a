"""Rejections you can act on (list, replay) and ledger retention (prune)."""

from __future__ import annotations

import json
import threading

import psycopg

from login_etl.masking import Masker, decode_key
from login_etl.postgres import session
from login_etl.rejects import ReplayResult, replay
from login_etl.sqlfiles import query as sql_text

from .helpers import REFUSE_POISON, event, query, scalar, send
from .helpers import USER_LOGINS_DDL as DDL
from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets

TRIGGER = REFUSE_POISON

# Holds an insert into user_logins until another login-etl session is inside a
# transaction too, then counts the overlap in a sequence (sequences ignore
# rollbacks and are seen by every session at once).
# Once one overlap is counted, later inserts go through: the peer may be done.
WAIT_FOR_A_PEER = """
CREATE SEQUENCE replay_overlaps;
CREATE FUNCTION wait_for_a_peer() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + interval '20 seconds';
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();
        IF EXISTS (
            SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database() AND pid <> pg_backend_pid()
              AND application_name = 'login-etl' AND xact_start IS NOT NULL
        ) THEN
            PERFORM nextval('replay_overlaps');
            RETURN NEW;
        END IF;
        IF (SELECT is_called FROM replay_overlaps) THEN
            RETURN NEW;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no concurrent replay';
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
END $$;
CREATE TRIGGER wait_for_a_peer BEFORE INSERT ON user_logins
    FOR EACH ROW EXECUTE FUNCTION wait_for_a_peer();
"""


def load_with_refusals(etl_env, sqs_client) -> None:
    """3 rows refused by the database, 2 malformed, 10 good."""
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(DDL + TRIGGER)
    bodies = [event(i) for i in range(10)]
    bodies += [event(100 + i, user_id=f"poison-{i}") for i in range(3)]
    bodies += ["not json", json.dumps({"foo": "oops_wrong_msg_type", "bar": "123"})]
    send(sqs_client, etl_env.queue_url, bodies)
    done = cli(etl_env.vars(), "run", "--drain")
    assert done.returncode == 0, done.stderr


def test_rejects_list_counts_and_bodies(etl_env, sqs_client) -> None:
    load_with_refusals(etl_env, sqs_client)
    listed = cli(etl_env.vars(), "rejects", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["by_reason"] == {
        "db_error:P0001": 3,
        "invalid_json": 1,
        "missing_field:user_id": 1,
    }
    assert doc["total"] == 5 and len(doc["recent"]) == 5
    assert all("body" not in r for r in doc["recent"])  # bodies only on request
    with_bodies = json.loads(
        cli(
            etl_env.vars(),
            "rejects",
            "list",
            "--json",
            "--show-bodies",
            "--reveal-pii",
            "--purpose",
            "triage of malformed messages",
        ).stdout
    )
    bodies = {r["body"] for r in with_bodies["recent"]}
    assert "not json" in bodies
    assert json.dumps({"foo": "oops_wrong_msg_type", "bar": "123"}) in bodies
    no_key = cli(
        etl_env.vars(LOGIN_ETL_MASKING_KEY=""), "rejects", "list", "--show-bodies", "--purpose", "x"
    )
    assert no_key.returncode == 2
    table = cli(etl_env.vars(), "rejects", "list", "--reason", "invalid_json")
    assert table.returncode == 0 and "invalid_json" in table.stdout
    # Bodies are sealed in the table, never plaintext.
    stored = query(etl_env.database_url, "SELECT sealed_body FROM user_logins_rejected")
    assert not any("poison" in s or "not json" in s for (s,) in stored)


def test_replay_moves_what_passes_now_exactly_once(etl_env, sqs_client) -> None:
    load_with_refusals(etl_env, sqs_client)
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 10
    # The database rule that refused them is lifted.
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_poison ON user_logins")

    # Two replays at once: each message still moves exactly once. A trigger
    # holds each insert until another replay's transaction is open too, so the
    # two really overlap (and fails the insert if that never happens).
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(WAIT_FOR_A_PEER)
    masker = Masker(decode_key(etl_env.key))
    results: list[ReplayResult] = []
    errors: list[BaseException] = []

    def replay_one_at_a_time() -> None:
        try:
            with session(etl_env.database_url) as conn:
                results.append(replay(conn, masker, page=1))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=replay_one_at_a_time) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2
    overlaps = scalar(etl_env.database_url, "SELECT is_called FROM replay_overlaps")
    assert overlaps, "the two replays never had transactions open at the same time"
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER wait_for_a_peer ON user_logins")
    assert sum(r.loaded for r in results) == 3
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 13
    assert (
        scalar(
            etl_env.database_url,
            "SELECT count(*) FROM user_logins WHERE user_id LIKE 'poison%'",
        )
        == 3
    )
    remaining = query(
        etl_env.database_url, "SELECT reason FROM user_logins_rejected ORDER BY reason"
    )
    assert remaining == [("invalid_json",), ("missing_field:user_id",)]
    assert (
        scalar(
            etl_env.database_url, "SELECT count(*) FROM login_etl_ledger WHERE outcome = 'loaded'"
        )
        == 13
    )

    again = cli(etl_env.vars(), "rejects", "replay")
    assert again.returncode == 0, again.stderr
    assert "loaded 0, still rejected 2" in again.stdout
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 13


def test_replay_by_reason_leaves_others(etl_env, sqs_client) -> None:
    load_with_refusals(etl_env, sqs_client)
    done = cli(etl_env.vars(), "rejects", "replay", "--reason", "invalid_json")
    assert done.returncode == 0, done.stderr
    assert "examined 1, loaded 0, still rejected 1" in done.stdout
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins_rejected") == 5


def test_prune_only_outside_the_redelivery_window(etl_env, sqs_client) -> None:
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(6)])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    # Age two entries beyond 4 days of retention + 1 day margin; one just inside.
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT message_id FROM login_etl_ledger ORDER BY 1")]
        conn.execute(
            "UPDATE login_etl_ledger SET sent_at = now() - interval '6 days',"
            " recorded_at = now() - interval '6 days'"
            " WHERE message_id = ANY(%s)",
            (ids[:2],),
        )
        conn.execute(
            "UPDATE login_etl_ledger SET sent_at = now() - interval '4 days 23 hours',"
            " recorded_at = now() - interval '4 days 23 hours'"
            " WHERE message_id = %s",
            (ids[2],),
        )
    dry = cli(etl_env.vars(), "prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would prune 2 ledger entries (retention 345600s" in dry.stdout
    assert scalar(etl_env.database_url, "SELECT count(*) FROM login_etl_ledger") == 6
    done = cli(etl_env.vars(), "prune")
    assert "pruned 2 ledger entries" in done.stdout
    left = {r[0] for r in query(etl_env.database_url, "SELECT message_id FROM login_etl_ledger")}
    assert left == set(ids[2:])
    # Retention is read from the queue: a 1-day queue prunes the 4d23h entry too.
    sqs_client.set_queue_attributes(
        QueueUrl=etl_env.queue_url, Attributes={"MessageRetentionPeriod": "86400"}
    )
    assert "pruned 1 ledger entries" in cli(etl_env.vars(), "prune").stdout
    # A hand-given retention shorter than the queue's would forget ids SQS can
    # still redeliver: refused with one line, unless forced; the queue's own is fine.
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE login_etl_ledger"
            " SET sent_at = now() - interval '3 days', recorded_at = now() - interval '3 days'"
        )
    short = cli(etl_env.vars(), "prune", "--retention", "3600")
    assert short.returncode == 2
    (line,) = short.stderr.strip().splitlines()
    assert "--retention 3600 is shorter than the queue's retention (86400s)" in line
    assert scalar(etl_env.database_url, "SELECT count(*) FROM login_etl_ledger") == 3
    same = cli(etl_env.vars(), "prune", "--retention", "86400", "--dry-run")
    assert same.returncode == 0 and "would prune 3 ledger entries" in same.stdout
    forced = cli(etl_env.vars(), "prune", "--retention", "3600", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "pruned 3 ledger entries" in forced.stdout
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 6


def test_prune_without_a_queue_still_refuses_a_short_retention(etl_env, sqs_client) -> None:
    # With no queue configured its retention cannot be read: a hand-given
    # retention is held against the longest SQS allows (14 days), so leaving
    # LOGIN_ETL_QUEUE_URL out cannot let a short one through unless forced.
    send(sqs_client, etl_env.queue_url, [event(i) for i in range(3)])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE login_etl_ledger"
            " SET sent_at = now() - interval '3 days', recorded_at = now() - interval '3 days'"
        )
    no_queue = etl_env.vars()
    del no_queue["LOGIN_ETL_QUEUE_URL"]
    short = cli(no_queue, "prune", "--retention", "3600")
    assert short.returncode == 2, short.stdout
    (line,) = short.stderr.strip().splitlines()
    assert "--retention 3600 is shorter than" in line and "1209600" in line
    assert scalar(etl_env.database_url, "SELECT count(*) FROM login_etl_ledger") == 3
    forced = cli(no_queue, "prune", "--retention", "3600", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "pruned 3 ledger entries" in forced.stdout


def test_prune_finds_old_entries_through_an_index(etl_env) -> None:
    # At scale the ledger holds retention + a day of ids; the hourly prune must
    # not read all of them. With sequential scans priced out, the planner shows
    # that an index serves prune's condition (EXPLAIN runs nothing).
    assert cli(etl_env.vars(), "init-db").returncode == 0
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        for name in ("prune_count", "prune_ledger"):
            rows = conn.execute("EXPLAIN " + sql_text(name), {"older_than": 86400.0})
            plan = "\n".join(r[0] for r in rows)
            assert "login_etl_ledger_recorded_at" in plan, (name, plan)


def test_rejects_list_into_a_pipe_prints_ids_and_bodies_whole(etl_env, sqs_client) -> None:
    body = json.dumps({"user_id": "u-" + "x" * 150, "note": "a body longer than any terminal"})
    send(sqs_client, etl_env.queue_url, [body, "not json"])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    rows = query(etl_env.database_url, "SELECT message_id, reason FROM user_logins_rejected")
    # A subprocess's stdout is a pipe; COLUMNS would narrow a terminal's table.
    listed = cli(
        etl_env.vars(COLUMNS="60"),
        "rejects",
        "list",
        "--show-bodies",
        "--purpose",
        "triage",
    )
    assert listed.returncode == 0, listed.stderr
    assert len(rows) == 2, rows
    for message_id, reason in rows:
        assert message_id in listed.stdout and reason in listed.stdout, listed.stdout
    assert "a body longer than any terminal" in listed.stdout
    assert "…" not in listed.stdout


def test_a_body_that_does_not_open_is_named_and_the_others_still_replay(
    etl_env, sqs_client
) -> None:
    load_with_refusals(etl_env, sqs_client)
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse_poison ON user_logins")
        poison = [
            r[0]
            for r in conn.execute(
                "SELECT message_id FROM user_logins_rejected"
                " WHERE reason LIKE 'db_error%' ORDER BY message_id"
            )
        ]
        # The first one replay meets gets a body copied from another row.
        conn.execute(
            "UPDATE user_logins_rejected SET sealed_body ="
            " (SELECT sealed_body FROM user_logins_rejected WHERE message_id = %s)"
            " WHERE message_id = %s",
            (poison[1], poison[0]),
        )
    done = cli(etl_env.vars(), "rejects", "replay")
    assert done.returncode == 1
    assert "examined 5, loaded 2, still rejected 2" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines[0] == (
        f"login-etl: message {poison[0]}: sealed body does not verify"
        " (tampered, or moved from another message)"
    )
    assert lines[1:] == ["login-etl: error: 1 sealed bodies did not open and were left as they are"]
    assert scalar(etl_env.database_url, "SELECT count(*) FROM user_logins") == 12
    left = query(etl_env.database_url, "SELECT message_id FROM user_logins_rejected")
    assert poison[0] in {m for (m,) in left} and len(left) == 3
