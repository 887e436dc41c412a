"""Key rotation end to end: load under key A, rotate to B, rekey, retire A."""

from __future__ import annotations

import json

import psycopg

from login_etl.masking import Masker, decode_key, generate_key, key_id

from .helpers import cli, event, query, send


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
    listed = cli(retired, "rejects", "list", "--json", "--show-bodies")
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
