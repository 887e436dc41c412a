"""Audited recovery through the CLI on real PostgreSQL: unmask, --user-id, --show-bodies.

Nothing is revealed without --purpose, and nothing before its audit row is
committed; the audit row never holds the values.
"""

from __future__ import annotations

import getpass
import json

import psycopg
import pytest

from login_etl.masking import Masker, decode_key

from .helpers import cli_in_process as cli  # what a command does; the process: test_secrets
from .helpers import dump_text, event, query, revealing_commands, scalar, send

WHY = ("--purpose", "ticket SEC-42: account takeover report")
AUDIT = (
    "SELECT actor, db_role, command, field, value_count, purpose, user_id"
    " FROM login_etl_pii_access ORDER BY id"
)


def load(etl_env, sqs_client, bodies: list[str]) -> None:
    send(sqs_client, etl_env.queue_url, bodies)
    done = cli(etl_env.vars(), "run", "--drain")
    assert done.returncode == 0, done.stderr


def masks_of(url: str, user_id: str) -> tuple[str, str]:
    rows = query(
        url, "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", user_id
    )
    assert len(rows) == 1
    return rows[0]


def audit_rows(url: str) -> list[tuple]:
    return query(url, AUDIT)


# -- unmask ----------------------------------------------------------------------


def test_unmask_records_who_why_and_how_many_but_never_the_values(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, [event(1, ip="203.0.113.9"), event(2, ip="198.51.100.4")])
    m1, m2 = (
        masks_of(etl_env.database_url, "user-1")[0],
        masks_of(etl_env.database_url, "user-2")[0],
    )
    before = scalar(etl_env.database_url, "SELECT clock_timestamp()")
    done = cli(etl_env.vars(), "unmask", "--field", "ip", *WHY, "--actor", "alice", m1, m2)
    after = scalar(etl_env.database_url, "SELECT clock_timestamp()")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "203.0.113.9\n198.51.100.4\n"
    assert audit_rows(etl_env.database_url) == [
        ("alice", "postgres", "unmask", "ip", 2, WHY[1], None)
    ]
    at = query(etl_env.database_url, "SELECT accessed_at FROM login_etl_pii_access")[0][0]
    assert before <= at <= after  # recorded by this command, on the database's clock
    audit_text = " ".join(
        map(str, query(etl_env.database_url, "SELECT * FROM login_etl_pii_access")[0])
    )
    assert "203.0.113.9" not in audit_text and "198.51.100.4" not in audit_text
    assert "PII access recorded" in done.stderr and "203.0.113.9" not in done.stderr


def test_the_actor_defaults_to_the_os_user(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, [event(1)])
    mask = masks_of(etl_env.database_url, "user-1")[1]
    done = cli(etl_env.vars(), "unmask", "--field", "device_id", *WHY, mask)
    assert done.returncode == 0, done.stderr
    assert audit_rows(etl_env.database_url)[0][:5] == (
        getpass.getuser(),
        "postgres",
        "unmask",
        "device_id",
        1,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--field", "ip"],
        ["--field", "ip", "--actor", "alice"],
        ["--field", "ip", "--purpose"],
        ["--user-id", "user-1"],
    ],
    ids=["no-purpose", "actor-only", "purpose-without-text", "user-id"],
)
def test_unmask_without_purpose_reveals_nothing(etl_env, sqs_client, args) -> None:
    load(etl_env, sqs_client, [event(1, ip="203.0.113.9")])
    mask = masks_of(etl_env.database_url, "user-1")[0]
    tail = [] if "--user-id" in args or args[-1] == "--purpose" else [mask]
    done = cli(etl_env.vars(), "unmask", *args, *tail, input=f"{mask}\n")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "203.0.113.9" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert audit_rows(etl_env.database_url) == []


FAILING_AUDITS = {
    # The insert itself fails.
    "insert": """
        CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit store refuses'; END $$;
        CREATE TRIGGER no_audit BEFORE INSERT ON login_etl_pii_access
            FOR EACH ROW EXECUTE FUNCTION no_audit();
    """,
    # The insert succeeds and the COMMIT fails (a deferred check): the row is
    # not committed, so nothing may be shown.
    "commit": """
        CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit store refuses at commit'; END $$;
        CREATE CONSTRAINT TRIGGER no_audit AFTER INSERT ON login_etl_pii_access
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION no_audit();
    """,
    "table-gone": "DROP TABLE login_etl_pii_access",
}


@pytest.mark.parametrize("failure", sorted(FAILING_AUDITS))
@revealing_commands(*WHY)
def test_when_the_audit_cannot_be_committed_nothing_is_revealed(
    etl_env, sqs_client, failure, command
) -> None:
    load(etl_env, sqs_client, [event(1, ip="203.0.113.9"), '{"ip": "203.0.113.9"'])
    mask = masks_of(etl_env.database_url, "user-1")[0]
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(FAILING_AUDITS[failure])
    done = cli(etl_env.vars(), *[mask if a == "MASK" else a for a in command])
    assert done.returncode != 0
    assert done.stdout == ""
    assert "203.0.113.9" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("login-etl: error:")
    if failure != "table-gone":
        assert audit_rows(etl_env.database_url) == []


def test_unmask_prints_one_line_per_input_and_escapes_controls(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, [event(1, ip="203.0.113.9")])
    good = masks_of(etl_env.database_url, "user-1")[0]
    # A value stored before control characters were refused, with the same key.
    masker = Masker(decode_key(etl_env.key))
    old = masker.mask("ip", "10.0.0.1\n6.6.6.6")
    esc = masker.mask("ip", "\x1b]0;owned\x07 10.0.0.2")
    stdin = f"{good}\n\n{old}\r\n{esc}\n"
    done = cli(etl_env.vars(), "unmask", "--field", "ip", *WHY, input=stdin)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == [
        "203.0.113.9",
        "",
        "10.0.0.1\\x0a6.6.6.6",
        "\\x1b]0;owned\\x07 10.0.0.2",
        "",
    ]
    assert "\x1b" not in done.stdout
    assert audit_rows(etl_env.database_url)[0][4] == 3  # the empty line reveals nothing


def test_piping_psql_style_output_pairs_line_for_line(etl_env, sqs_client) -> None:
    ips = [f"192.0.2.{n}" for n in range(1, 8)]
    load(etl_env, sqs_client, [event(i, ip=ip) for i, ip in enumerate(ips)])
    rows = query(
        etl_env.database_url, "SELECT user_id, masked_ip FROM user_logins ORDER BY user_id"
    )
    done = cli(
        etl_env.vars(), "unmask", "--field", "ip", *WHY, input="".join(f"{m}\n" for _, m in rows)
    )
    assert done.returncode == 0, done.stderr
    expected = [ips[int(user.split("-")[1])] for user, _ in rows]
    assert done.stdout.splitlines() == expected


def test_unmask_user_id_reveals_that_users_rows_only(etl_env, sqs_client) -> None:
    load(
        etl_env,
        sqs_client,
        [
            event(1, user_id="u-target", ip="203.0.113.1", device_id="111-11-1111"),
            event(2, user_id="u-target", ip="203.0.113.2", device_id="111-11-1111"),
            event(3, user_id="u-other", ip="203.0.113.3", device_id="333-33-3333"),
        ],
    )
    done = cli(etl_env.vars(), "unmask", "--user-id", "u-target", *WHY, "--actor", "bob")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "create_date\tdevice_type\tip\tdevice_id"
    assert sorted(line.split("\t")[2:] for line in lines[1:]) == [
        ["203.0.113.1", "111-11-1111"],
        ["203.0.113.2", "111-11-1111"],
    ]
    assert "203.0.113.3" not in done.stdout and "333-33-3333" not in done.stdout
    assert audit_rows(etl_env.database_url) == [
        ("bob", "postgres", "unmask --user-id", "ip,device_id", 4, WHY[1], "u-target")
    ]
    only_ip = cli(etl_env.vars(), "unmask", "--user-id", "u-target", "--field", "ip", *WHY)
    assert only_ip.returncode == 0, only_ip.stderr
    assert "111-11-1111" not in only_ip.stdout
    assert sorted(only_ip.stdout.splitlines()[1:])[0].endswith("\t203.0.113.1")
    assert audit_rows(etl_env.database_url)[1][3:5] == ("ip", 2)
    nobody = cli(etl_env.vars(), "unmask", "--user-id", "u-missing", *WHY)
    assert (nobody.returncode, nobody.stdout.splitlines()[1:]) == (0, [])
    assert audit_rows(etl_env.database_url)[2][3:] == ("ip,device_id", 0, WHY[1], "u-missing")


# -- rejects list --show-bodies ----------------------------------------------------

PII_BODY = json.dumps(
    {"user_id": "u", "ip": "203.0.113.77", "device": {"id": "777-77-7777"}, "app_version": "x"}
)
BROKEN_BODY = '{"user_id": "u", "ip": "203.0.113.78", "device_id": "788-88-8888"'


def test_show_bodies_masks_pii_unless_revealed_and_audits_both(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, [PII_BODY, BROKEN_BODY])
    masker = Masker(decode_key(etl_env.key))
    without = cli(etl_env.vars(), "rejects", "list", "--json", "--show-bodies")
    assert without.returncode == 2 and without.stdout == ""
    assert "--purpose" in without.stderr

    masked = cli(etl_env.vars(), "rejects", "list", "--json", "--show-bodies", *WHY)
    assert masked.returncode == 0, masked.stderr
    for plain in ("203.0.113.77", "777-77-7777", "203.0.113.78", "788-88-8888"):
        assert plain not in masked.stdout
    bodies = {r["reason"]: r["body"] for r in json.loads(masked.stdout)["recent"]}
    shown = json.loads(bodies["missing_field:device_type"])
    assert shown["ip"] == masker.mask("ip", "203.0.113.77")  # matchable against user_logins
    assert shown["device"]["id"] == masker.mask("device_id", "777-77-7777")
    assert shown["user_id"] == "u"
    assert "not JSON: hidden" in bodies["invalid_json"]

    text = cli(etl_env.vars(), "rejects", "list", "--show-bodies", *WHY)
    assert text.returncode == 0, text.stderr
    assert "203.0.113.77" not in text.stdout

    revealed = cli(
        etl_env.vars(), "rejects", "list", "--json", "--show-bodies", "--reveal-pii", *WHY
    )
    assert revealed.returncode == 0, revealed.stderr
    assert {r["body"] for r in json.loads(revealed.stdout)["recent"]} == {PII_BODY, BROKEN_BODY}
    assert [r[2:5] for r in audit_rows(etl_env.database_url)] == [
        ("rejects list --show-bodies", "body", 2),
        ("rejects list --show-bodies", "body", 2),
        ("rejects list --show-bodies --reveal-pii", "body,ip,device_id", 2),
    ]
    # Listing without bodies reveals nothing and is not audited.
    assert cli(etl_env.vars(), "rejects", "list").returncode == 0
    assert len(audit_rows(etl_env.database_url)) == 3
    assert "203.0.113.77" not in dump_text(etl_env.database_url)


HOSTILE_BODY = json.dumps(
    {
        "user_id": "u-hostile",
        "ip": "198.51.100.98",
        "device_id": "SECRETDEV-9",
        "app_version": "x",  # rejected: the body is sealed, then listed
        "note": "from 198.51.100.99:443",
        "seen": {"SECRETDEV-9": 1},
        "udid": "SECRETDEV-9",
        "hwid": "secretdev-9",
        "v6": "via [2001:db8::7]:443",
        "referrer": "http://198.51.100.98/login",
        "hops": ["198.51.100.97:1"],
        "ipnum": 3325256802,
    }
)


def test_show_bodies_masks_addresses_and_own_values_in_any_place(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, [HOSTILE_BODY])
    masker = Masker(decode_key(etl_env.key))
    masked = cli(etl_env.vars(), "rejects", "list", "--json", "--show-bodies", *WHY)
    assert masked.returncode == 0, masked.stderr
    for plain in ("198.51.100", "secretdev-9", "2001:db8", "3325256802"):
        assert plain not in masked.stdout.lower(), plain
    shown = json.loads(json.loads(masked.stdout)["recent"][0]["body"])
    assert shown == {
        "user_id": "u-hostile",
        "ip": masker.mask("ip", "198.51.100.98"),
        "device_id": masker.mask("device_id", "SECRETDEV-9"),
        "app_version": "x",
        "note": "from [address]:443",
        "seen": {"[device_id]": 1},
        "udid": "[device_id]",
        "hwid": "[device_id]",
        "v6": "via [[address]]:443",
        "referrer": "http://[address]/login",
        "hops": ["[address]:1"],
        "ipnum": "[ip]",  # 198.51.100.98 as a 32-bit integer
    }
    revealed = cli(
        etl_env.vars(), "rejects", "list", "--json", "--show-bodies", "--reveal-pii", *WHY
    )
    assert revealed.returncode == 0, revealed.stderr
    assert json.loads(revealed.stdout)["recent"][0]["body"] == HOSTILE_BODY
    assert [r[2:5] for r in audit_rows(etl_env.database_url)] == [
        ("rejects list --show-bodies", "body", 1),
        ("rejects list --show-bodies --reveal-pii", "body,ip,device_id", 1),
    ]


def test_show_bodies_escapes_control_characters_in_text_output(etl_env, sqs_client) -> None:
    load(etl_env, sqs_client, ["not json \x1b[31m red"])
    done = cli(etl_env.vars(), "rejects", "list", "--show-bodies", "--reveal-pii", *WHY)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\\x1b[31m" in done.stdout


def test_a_sealed_body_moved_to_another_row_is_named_and_the_rest_shown(
    etl_env, sqs_client
) -> None:
    load(etl_env, sqs_client, ["not json 1", "not json 2", "not json 3"])
    ids = [m for (m,) in query(etl_env.database_url, "SELECT message_id FROM user_logins_rejected")]
    moved, source = sorted(ids)[:2]
    with psycopg.connect(etl_env.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE user_logins_rejected SET sealed_body ="
            " (SELECT sealed_body FROM user_logins_rejected WHERE message_id = %s)"
            " WHERE message_id = %s",
            (source, moved),
        )
    done = cli(etl_env.vars(), "rejects", "list", "--json", "--show-bodies", "--reveal-pii", *WHY)
    assert done.returncode == 1
    bodies = {r["message_id"]: r.get("body") for r in json.loads(done.stdout)["recent"]}
    assert bodies.pop(moved) is None
    shown = set(bodies.values())
    assert len(shown) == 2 and shown < {"not json 1", "not json 2", "not json 3"}
    assert done.stderr.strip().splitlines()[-2:] == [
        f"login-etl: message {moved}: sealed body does not verify"
        " (tampered, or moved from another message)",
        "login-etl: error: 1 sealed bodies did not open and were left as they are",
    ]
    assert [r[2:5] for r in audit_rows(etl_env.database_url)] == [
        ("rejects list --show-bodies --reveal-pii", "body,ip,device_id", 2)
    ]
