"""Key rotation end to end: load under key A, rotate to B, rekey, retire A."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from login_etl.masking import Masker, decode_key, generate_key, key_id

from .helpers import USER_LOGINS_DDL as DDL
from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import event, query, send, wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_rotation_then_rekey_restores_duplicates_and_retires_the_old_key(
    etl_env, sqs_client
) -> None:
    old_key, new_key = etl_env.key, generate_key()
    old_id, new_id = key_id(decode_key(old_key)), key_id(decode_key(new_key))
    # Before the rotation: user 1 on a shared device and ip, plus one rejection.
    shared = {"ip": "198.51.100.7", "device_id": "111-22-3333"}
    send(sqs_client, etl_env.queue_url, [event(1, **shared), "not json"])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    # Rotate: B is primary, A decrypt-only. User 2 logs in from the same device and ip.
    rotated = etl_env.vars(LOGIN_ETL_MASKING_KEY=new_key, LOGIN_ETL_MASKING_OLD_KEYS=old_key)
    send(sqs_client, etl_env.queue_url, [event(2, **shared)])
    assert cli(rotated, "run", "--drain").returncode == 0
    masks = query(etl_env.database_url, "SELECT masked_ip FROM user_logins ORDER BY user_id")
    assert [m[0].split(".")[0] for m in masks] == [old_id, new_id]
    assert masks[0] != masks[1]  # the duplicate is hidden across keys ...

    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO user_logins (user_id) VALUES ('row made elsewhere')")
    done = cli(rotated, "rekey")
    assert done.returncode == 0, done.stderr
    assert "rewrote 1 rows and 1 rejected bodies" in done.stdout

    rows = query(
        etl_env.database_url,
        "SELECT masked_ip, masked_device_id FROM user_logins WHERE masked_ip IS NOT NULL",
    )
    assert (
        len({ip for ip, _ in rows}) == 1 and len({dev for _, dev in rows}) == 1
    )  # ... found again
    new_only = Masker(decode_key(new_key))
    assert new_only.unmask("ip", rows[0][0]) == shared["ip"]
    assert new_only.unmask("device_id", rows[0][1]) == shared["device_id"]
    # The old key can go: bodies open with the new key alone.
    retired = etl_env.vars(LOGIN_ETL_MASKING_KEY=new_key)
    listed = cli(
        retired, "rejects", "list", "--json", "--show-bodies", "--reveal-pii", "--purpose", "check"
    )
    assert listed.returncode == 0, listed.stderr
    assert [r["body"] for r in json.loads(listed.stdout)["recent"]] == ["not json"]
    again = cli(retired, "rekey")
    assert "rewrote 0 rows and 0 rejected bodies" in again.stdout


def test_rekey_reports_masks_no_known_key_made(etl_env, sqs_client) -> None:
    send(sqs_client, etl_env.queue_url, [event(1)])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    stranger = etl_env.vars(LOGIN_ETL_MASKING_KEY=generate_key())  # the old key is lost
    done = cli(stranger, "rekey")
    assert done.returncode == 1
    assert "1 values were made by no known key" in done.stderr
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(1,)]


def test_run_refuses_a_key_that_made_none_of_the_stored_masks(etl_env, sqs_client) -> None:
    send(sqs_client, etl_env.queue_url, [event(1)])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    stored_id, fresh = key_id(decode_key(etl_env.key)), generate_key()
    fresh_id = key_id(decode_key(fresh))
    send(sqs_client, etl_env.queue_url, [event(2)])
    done = cli(etl_env.vars(LOGIN_ETL_MASKING_KEY=fresh), "run", "--drain")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "login-etl: error: the database holds masks or sealed bodies made by key id(s)"
    )
    assert stored_id in line and fresh_id in line
    assert etl_env.key not in done.stderr and fresh not in done.stderr
    # Nothing was loaded under the wrong key; the message waits in the queue.
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(1,)]
    # Listed as an old key, the stored masks are accounted for: it runs.
    rotated = etl_env.vars(LOGIN_ETL_MASKING_KEY=fresh, LOGIN_ETL_MASKING_OLD_KEYS=etl_env.key)
    assert cli(rotated, "run", "--drain").returncode == 0
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(2,)]


def test_run_refuses_a_fresh_key_when_only_sealed_rejections_are_stored(
    etl_env, sqs_client
) -> None:
    # No row has loaded yet, but a rejected body is sealed under the key: a
    # fresh key would leave it unreadable, so it is refused as for masks.
    send(sqs_client, etl_env.queue_url, ["not json"])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(0,)]
    stored_id = key_id(decode_key(etl_env.key))
    send(sqs_client, etl_env.queue_url, [event(1)])
    done = cli(etl_env.vars(LOGIN_ETL_MASKING_KEY=generate_key()), "run", "--drain")
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "sealed bodies made by key id(s) " + stored_id in line
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(0,)]
    # The key that sealed it still runs.
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0
    assert query(etl_env.database_url, "SELECT count(*) FROM user_logins") == [(1,)]


def test_run_refuses_a_fresh_key_when_only_the_lake_outbox_holds_masks(etl_env) -> None:
    assert cli(etl_env.vars(), "init-db").returncode == 0
    masker = Masker(decode_key(etl_env.key))
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO login_etl_lake_outbox (message_id, sent_at, create_date, user_id,"
            " device_type, masked_ip, masked_device_id, app_version, app_version_raw, extra)"
            " VALUES ('m-1', now(), current_date, 'u-1', 'ios', %s, %s, 1, '1.0.0', '{}')",
            (masker.mask("ip", "192.0.2.1"), masker.mask("device_id", "d-1")),
        )
    done = cli(etl_env.vars(LOGIN_ETL_MASKING_KEY=generate_key()), "run", "--drain")
    assert done.returncode == 2, done.stderr
    assert key_id(decode_key(etl_env.key)) in done.stderr
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0


def test_any_key_may_start_on_an_empty_table(etl_env, sqs_client) -> None:
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(DDL)
        conn.execute("INSERT INTO user_logins (user_id) VALUES ('row made elsewhere, no masks')")
    send(sqs_client, etl_env.queue_url, [event(1)])
    done = cli(etl_env.vars(), "run", "--drain")
    assert done.returncode == 0, done.stderr


def _ip(i: int) -> str:
    return f"198.51.100.{i % 7}"  # 7 addresses shared by every phase


def _device(i: int) -> str:
    return f"{500 + i % 5}-55-5555"  # 5 devices shared by every phase


def test_rotation_in_the_middle_of_a_load_ends_with_every_row_under_the_new_key(
    etl_env, sqs_client
) -> None:
    """Rows loaded before, during and after a rotation all end under the new key,
    duplicates intact: keygen → new key primary with the old one listed → rekey
    (while workers still load, one of them not yet moved to the new key) → rekey
    once the last old worker is gone → the old key retired."""
    url = etl_env.database_url
    bodies = {i: event(i, ip=_ip(i), device_id=_device(i)) for i in range(420)}
    bad = [f"not json {n}" for n in range(6)]

    # Before: key A.
    send(sqs_client, etl_env.queue_url, [bodies[i] for i in range(60)] + bad[:2])
    assert cli(etl_env.vars(), "run", "--drain").returncode == 0

    # Rotation: a new key B from keygen, A kept for reading.
    made = cli(etl_env.vars(), "keygen")
    assert made.returncode == 0
    key_b = made.stdout.strip()
    id_a, id_b = key_id(decode_key(etl_env.key)), key_id(decode_key(key_b))
    rotated = etl_env.vars(LOGIN_ETL_MASKING_KEY=key_b, LOGIN_ETL_MASKING_OLD_KEYS=etl_env.key)

    # During: a rolling deploy. A worker still on A alone (started before the
    # rotation reached it) goes on loading while a worker on B (A old) starts;
    # small batches keep both loading for a while, and rekey passes run meanwhile.
    send(sqs_client, etl_env.queue_url, [bodies[i] for i in range(60, 360)] + bad[2:4])
    slow = {"LOGIN_ETL_BATCH_SIZE": "3", "LOGIN_ETL_CONCURRENCY": "1"}

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "login_etl", "run", "--drain"],
            env={**env, **slow},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    workers = [start(etl_env.vars())]
    overlapped = rewritten = 0
    try:
        deadline = time.monotonic() + 60
        while query(url, "SELECT count(*) FROM user_logins")[0][0] <= 60:
            assert time.monotonic() < deadline and workers[0].poll() is None
            time.sleep(0.05)
        workers.append(start(rotated))
        while any(w.poll() is None for w in workers):
            alive_before = all(w.poll() is None for w in workers)
            done = cli(rotated, "rekey")
            assert done.returncode == 0, done.stderr
            if alive_before and any(w.poll() is None for w in workers):
                overlapped += 1
            rewritten += int(done.stdout.split()[1])
    finally:
        errors = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert overlapped >= 1  # at least one rekey pass ran wholly while both workers loaded

    # After: every worker on B; then the last rekey, then A retired.
    send(sqs_client, etl_env.queue_url, [bodies[i] for i in range(360, 420)] + bad[4:])
    assert cli(rotated, "run", "--drain").returncode == 0
    final = cli(rotated, "rekey")
    assert final.returncode == 0, final.stderr
    rewritten += int(final.stdout.split()[1])
    # The 60 rows from before, and at least one the A worker loaded during the rotation.
    assert rewritten > 60
    retired = etl_env.vars(LOGIN_ETL_MASKING_KEY=key_b)
    again = cli(retired, "rekey")
    assert "rewrote 0 rows and 0 rejected bodies" in again.stdout

    # Every message exactly once, every mask and body under B.
    rows = query(url, "SELECT user_id, masked_ip, masked_device_id FROM user_logins")
    assert sorted(r[0] for r in rows) == sorted(f"user-{i}" for i in bodies)
    assert {m.split(".")[0] for _, ip, dev in rows for m in (ip, dev)} == {id_b}
    sealed = query(url, "SELECT sealed_body FROM user_logins_rejected")
    assert len(sealed) == len(bad) and {s.split(".")[0] for (s,) in sealed} == {id_b}
    # Duplicates intact: two rows share a mask exactly when they share the value.
    expected_ip = {f"user-{i}": _ip(i) for i in bodies}
    expected_dev = {f"user-{i}": _device(i) for i in bodies}
    by_mask: dict[str, set[str]] = {}
    by_dev: dict[str, set[str]] = {}
    for user, ip, dev in rows:
        by_mask.setdefault(ip, set()).add(expected_ip[user])
        by_dev.setdefault(dev, set()).add(expected_dev[user])
    assert all(len(v) == 1 for v in by_mask.values()) and len(by_mask) == 7
    assert all(len(v) == 1 for v in by_dev.values()) and len(by_dev) == 5
    duplicates = query(url, (ROOT / "src/login_etl/sql/duplicates.sql").read_text())
    counts = {(field, n) for field, _, n in duplicates}
    assert counts == {("ip", 60)} | {("device_id", 84)}
    # The retired key is refused: what it made is gone from the table.
    send(sqs_client, etl_env.queue_url, [event(999)])
    stale = cli(etl_env.vars(), "run", "--drain")
    assert stale.returncode == 2 and id_b in stale.stderr and id_a in stale.stderr
    # And B alone opens everything: masks and bodies.
    b_only = Masker(decode_key(key_b))
    assert {b_only.unmask("ip", ip) for _, ip, _ in rows} == {_ip(i) for i in range(7)}
    listed = cli(
        retired, "rejects", "list", "--json", "--show-bodies", "--reveal-pii", "--purpose", "x"
    )
    assert sorted(r["body"] for r in json.loads(listed.stdout)["recent"]) == sorted(bad)


def test_a_wrong_key_started_while_postgres_is_down_loads_nothing(
    own_pg, own_pg_env, sqs_client, workers
):
    """A replica (no init-db) starts receiving while the database is down; the
    key check then runs before its first write, and refuses."""
    env, url = own_pg_env, own_pg_env.database_url
    send(sqs_client, env.queue_url, [event(1)])
    assert cli(env.vars(), "run", "--drain").returncode == 0
    own_pg.stop("fast")
    send(sqs_client, env.queue_url, [event(2), event(3)])
    fresh = generate_key()
    replica = workers.start(
        env.vars(
            LOGIN_ETL_MASKING_KEY=fresh, LOGIN_ETL_INIT_DB="false", LOGIN_ETL_MAX_RETRY_TIME="60"
        ),
        "run",
        "--drain",
    )
    # Started, holding a batch, and waiting for the database to write it.
    wait_for(lambda: "write failed, retrying" in replica.log, 60, "the replica's first write")
    assert replica.alive(), replica.log
    own_pg.start()
    assert replica.wait(90) == 2, replica.log
    stderr = replica.log
    assert "key check deferred to the first batch" in stderr
    assert key_id(decode_key(fresh)) in stderr.strip().splitlines()[-1]
    assert query(url, "SELECT user_id FROM user_logins") == [("user-1",)]
