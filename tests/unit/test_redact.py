"""Secrets never leave the process: redact.scrub, URL checks, and log lines of any origin."""

from __future__ import annotations

import io
import json
import logging
import secrets
import shlex
import warnings

import pytest

from login_etl import logs, redact
from login_etl.config import Settings
from login_etl.errors import ConfigError
from login_etl.postgres import check_url, connect
from tests.unit.helpers import KEY_A_TEXT


def password() -> str:
    return "pw-" + secrets.token_urlsafe(12)


def typos(pw: str) -> list[str]:
    """Connection strings as people mistype them, each carrying `pw`."""
    return [
        f"postgresql://etl:{pw}@db.example:5432/logins",
        f"postgresql//etl:{pw}@db.example/logins",  # missing colon
        f"postgresql:/etl:{pw}@db.example/logins",
        f'"postgresql://etl:{pw}@db.example/logins"',  # quoted, as docker --env-file leaves it
        f"'postgresql://etl:{pw}@db.example/logins'",
        f"postgresql://etl:{pw}@db.example:54x2/logins",  # bad port
        f"host=db.example user=etl password={pw} dbname=logins",
        f"host=db.example password='{pw}' dbname=logins",
        f"postgresql://etl@db.example/logins?password={pw}",
    ]


@pytest.mark.parametrize("index", range(9))
def test_patterns_hide_passwords_even_unregistered(index: int) -> None:
    pw = password()
    url = typos(pw)[index]
    out = redact.scrub(f'missing "=" after "{url}" in connection info string')
    assert pw not in out
    assert redact.MASK in out


def test_registered_secrets_are_hidden_anywhere() -> None:
    pw = password()
    redact.register(f"postgresql//etl:{pw}@db/x", KEY_A_TEXT)
    assert pw not in redact.scrub(f"the value {pw} alone")
    assert pw not in redact.scrub(f"{pw}{pw}")
    assert redact.scrub(f"key={KEY_A_TEXT}.") == f"key={redact.MASK}."


@pytest.mark.parametrize("lead", ["aaa", "zzz"])  # the outer one sorts first or last by name
@pytest.mark.parametrize("order", ["short first", "long first"])
def test_a_secret_inside_another_is_hidden_whole(order: str, lead: str) -> None:
    # A password is a substring of the URL that holds it, and a key may contain
    # a shorter secret: the longer one must go first, or its remainder shows.
    inner = "pw-" + secrets.token_hex(8)
    outer = f"{lead}-{inner}-tail-{secrets.token_hex(8)}"
    pair = (inner, outer) if order == "short first" else (outer, inner)
    redact.register(*pair)
    assert redact.scrub(f"value {outer} and {inner}.") == "value *** and ***."


def test_ordinary_text_is_left_alone() -> None:
    redact.register("abc")  # too short to register: would blot out words
    line = "batch committed messages=500 loaded=498 ms=12.5 http://127.0.0.1:4566/000/q abc"
    assert redact.scrub(line) == line


# typos(): 0 loads; 1-5 are refused (malformed, quoted, bad port); 6-8 load (keywords, query).
REFUSED = {1, 2, 3, 4, 5}


@pytest.mark.parametrize("index", range(9))
def test_settings_register_the_database_url_and_refuse_malformed_ones(index: int) -> None:
    pw = password()
    url = typos(pw)[index]
    if index in REFUSED:
        with pytest.raises(ConfigError) as info:
            check_url(Settings.load({}, {"LOGIN_ETL_DATABASE_URL": url}).database_url)
        assert pw not in str(info.value) and url not in str(info.value)
    else:
        check_url(Settings.load({}, {"LOGIN_ETL_DATABASE_URL": url}).database_url)
    assert pw not in redact.scrub(f"echo {url} and {pw}")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ('"postgresql://u:{pw}@h/db"', "wrapped in quotes"),
        ("'postgresql://u:{pw}@h/db'", "wrapped in quotes"),
        ("postgresql//u:{pw}@h/db", "malformed"),
        ("postgresql://u:{pw}@h:99999/db", "invalid port"),
        ("postgresql://u:{pw}@h:abc/db", "invalid port"),
        ("postgresql://u:{pw}@h/db?sslmode=bogus", "sslmode must be one of"),
        ("postgresql://u:{pw}@h/db?gssencmode=maybe", "gssencmode must be one of"),
        ("postgresql://u:{pw}@h/db?target_session_attrs=any-old", "target_session_attrs"),
    ],
)
def test_malformed_urls_are_configuration_errors(url: str, fragment: str) -> None:
    pw = password()
    url = url.format(pw=pw)
    with pytest.raises(ConfigError, match=fragment) as info:
        settings = Settings.load({}, {"LOGIN_ETL_DATABASE_URL": url})
        connect(settings.database_url, connect_timeout=1)
    assert pw not in str(info.value)


def capture(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    logs.configure(fmt, "info")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    return stream


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_logger_follows_the_format_and_is_scrubbed(fmt: str) -> None:
    pw = password()
    redact.register(f"postgresql://etl:{pw}@db/x")
    stream = capture(fmt)
    logging.getLogger("botocore.retries").warning("retrying %s", "GetQueueAttributes")
    logging.getLogger("psycopg").warning("connection to postgresql://etl:%s@db failed", pw)
    logging.getLogger("login_etl.pipeline").info("batch committed", extra={"fields": {"n": 1}})
    logging.getLogger("botocore.endpoint").debug("request body with a message")  # below WARNING
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library deprecation", DeprecationWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert all(pw not in line for line in lines)
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        assert [d["logger"] for d in docs] == [
            "botocore.retries",
            "psycopg",
            "login_etl.pipeline",
            "py.warnings",
        ]
        assert docs[2]["n"] == 1
    else:
        assert all(" WARNING " in lines[i] or " INFO " in lines[i] for i in range(4))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_an_exception_is_one_line_naming_its_type(fmt: str) -> None:
    stream = capture(fmt)
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        # What asyncio logs for a client gone mid-answer: two lines of text and a traceback.
        logging.getLogger("asyncio").error("Unhandled exception\ntransport: x", exc_info=True)
    [line] = stream.getvalue().splitlines()
    assert "Traceback" not in line and "raise BrokenPipeError" not in line
    if fmt == "json":
        assert json.loads(line)["error"] == "BrokenPipeError"
    else:
        assert line.endswith(" error=BrokenPipeError"), line


def test_free_text_fields_cannot_pose_as_other_fields_in_text_logs() -> None:
    stream = capture("text")
    spoof = 'alice db_role=postgres values=0\n12:00:00 INFO  forged: "line"'
    fields = {"actor": spoof, "values": 3, "command": "unmask", "empty": ""}
    logging.getLogger("login_etl.audit").info("PII access recorded", extra={"fields": fields})
    (line,) = stream.getvalue().splitlines()
    tail = line.split("PII access recorded ", 1)[1]
    assert tail == f'actor={json.dumps(spoof)} values=3 command=unmask empty=""'
    # A logfmt reader sees four fields, and the actor's text in one piece.
    parsed = dict(token.split("=", 1) for token in shlex.split(tail))
    assert list(parsed) == ["actor", "values", "command", "empty"]
    assert parsed["actor"] == spoof.replace("\n", "\\n")  # the newline stays escaped


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        # One token each, so only the character itself calls for quoting.
        ("a\nb", r'"a\nb"'),  # would start another line
        ("a\tb", r'"a\tb"'),  # not printable
        ("x=y", '"x=y"'),  # would read as a field
        ('say"hi', r'"say\"hi"'),  # would open a quoted value
        ("C:\\dir", r'"C:\\dir"'),  # would escape the next character
        ("plain-word_1.2", "plain-word_1.2"),
        (7, "7"),
    ],
)
def test_a_text_field_is_bare_only_when_it_is_one_plain_word(value: object, shown: str) -> None:
    stream = capture("text")
    logging.getLogger("login_etl.audit").info("seen", extra={"fields": {"actor": value}})
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(f" seen actor={shown}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_is_scrubbed_before_quoting_or_escaping_can_hide_it(fmt: str) -> None:
    secret = 'pässwort-"42"\\x'  # non-ASCII, quotes and a backslash: all escaped when quoted
    redact.register(secret)
    stream = capture(fmt)
    logging.getLogger("login_etl.audit").info(
        "seen %s", secret, extra={"fields": {"actor": f"{secret} and more", "n": 1}}
    )
    (line,) = stream.getvalue().splitlines()
    assert secret not in line
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        assert escaped not in line
    assert line.count(redact.MASK) == 2, line
