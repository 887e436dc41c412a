"""config.Settings.load: defaults, env, flags, validation and secrets."""

from __future__ import annotations

from typing import Any

import pytest

from login_etl.config import SPECS, Settings
from login_etl.errors import ConfigError
from login_etl.masking import Masker, key_id
from login_etl.pipeline import Options
from tests.unit.helpers import KEY_A, KEY_A_TEXT, KEY_B, KEY_B_TEXT

PASSWORD = "s3cr3t-pa55word"
DB_URL = f"postgresql://etl:{PASSWORD}@db.example:5432/logins"


def load(flags: dict[str, Any] | None = None, **env: str) -> Settings:
    return Settings.load(flags or {}, env)


def test_defaults() -> None:
    s = load()
    assert s == Settings()
    assert (s.queue_url, s.database_url, s.masking_key, s.masking_old_keys) == (None, "", None, "")
    assert (s.concurrency, s.batch_size, s.batch_wait, s.wait_time) == (4, 500, 1000, 20)
    assert (s.max_in_flight, s.max_retry_time, s.shutdown_timeout) == (2000, 300, 30)
    assert (s.metrics_port, s.init_db, s.log_format, s.log_level) == (0, True, "text", "INFO")


def test_every_field_has_a_spec_with_env_and_flag() -> None:
    names = set(Settings.__dataclass_fields__)
    assert names == set(SPECS)
    for name, spec in SPECS.items():
        assert spec.env == "LOGIN_ETL_" + name.upper()
        assert spec.flag == "--" + name.replace("_", "-")
        assert spec.help


def test_env_values_are_parsed() -> None:
    s = load(
        LOGIN_ETL_QUEUE_URL="http://sqs.local/000/login-queue",
        LOGIN_ETL_DATABASE_URL=DB_URL,
        LOGIN_ETL_MASKING_KEY=KEY_A_TEXT,
        LOGIN_ETL_CONCURRENCY=" 8 ",
        LOGIN_ETL_BATCH_SIZE="100",
        LOGIN_ETL_BATCH_WAIT="250",
        LOGIN_ETL_WAIT_TIME="0",
        LOGIN_ETL_MAX_IN_FLIGHT="100",
        LOGIN_ETL_MAX_RETRY_TIME="5",
        LOGIN_ETL_SHUTDOWN_TIMEOUT="7",
        LOGIN_ETL_METRICS_PORT="9100",
        LOGIN_ETL_INIT_DB="no",
        LOGIN_ETL_LOG_FORMAT="JSON",
        LOGIN_ETL_LOG_LEVEL="debug",
    )
    assert s.queue_url == "http://sqs.local/000/login-queue"
    assert s.database_url == DB_URL
    assert s.masking_key == KEY_A_TEXT
    assert (s.concurrency, s.batch_size, s.batch_wait, s.wait_time) == (8, 100, 250, 0)
    assert (s.max_in_flight, s.max_retry_time, s.shutdown_timeout) == (100, 5, 7)
    assert (s.metrics_port, s.init_db, s.log_format, s.log_level) == (9100, False, "json", "DEBUG")


def test_flag_overrides_env() -> None:
    s = load(
        {"batch_size": "10", "queue_url": "http://flag", "init_db": True, "concurrency": None},
        LOGIN_ETL_BATCH_SIZE="20",
        LOGIN_ETL_QUEUE_URL="http://env",
        LOGIN_ETL_INIT_DB="false",
        LOGIN_ETL_CONCURRENCY="3",
    )
    assert (s.batch_size, s.queue_url, s.init_db) == (10, "http://flag", True)
    assert s.concurrency == 3  # a None flag means "not given"


def test_reads_os_environ_when_env_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGIN_ETL_BATCH_SIZE", "42")
    assert Settings.load().batch_size == 42
    assert Settings.load({}, {}).batch_size == 500


def test_empty_env_value_means_default() -> None:
    assert load(LOGIN_ETL_BATCH_SIZE="", LOGIN_ETL_LOG_FORMAT="").batch_size == 500


@pytest.mark.parametrize("value", ["1", "true", "YES", "On", " true "])
def test_bool_true(value: str) -> None:
    assert load(LOGIN_ETL_INIT_DB=value).init_db is True


@pytest.mark.parametrize("value", ["0", "false", "NO", "off"])
def test_bool_false(value: str) -> None:
    assert load(LOGIN_ETL_INIT_DB=value).init_db is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("batch_size", "abc", "whole number"),
        ("batch_size", "1.5", "whole number"),
        ("batch_size", "0", "between 1 and 10000"),
        ("batch_size", "10001", "between 1 and 10000"),
        ("concurrency", "-1", "between 1 and 64"),
        ("concurrency", "65", "between 1 and 64"),
        ("wait_time", "21", "between 0 and 20"),
        ("max_in_flight", "9", "between 10 and 100000"),
        ("metrics_port", "70000", "between 0 and 65535"),
        ("max_retry_time", "0", "between 1 and 86400"),
        ("init_db", "maybe", "true or false"),
        ("log_format", "xml", "one of text, json"),
        ("log_level", "trace", "one of debug, info, warning, error"),
    ],
)
def test_invalid_values_name_flag_and_env(name: str, value: str, message: str) -> None:
    spec = SPECS[name]
    for source in ("flag", "env"):
        flags = {name: value} if source == "flag" else {}
        env = {spec.env: value} if source == "env" else {}
        with pytest.raises(ConfigError, match=message) as info:
            Settings.load(flags, env)
        assert spec.flag in str(info.value)
        assert spec.env in str(info.value)


@pytest.mark.parametrize(
    ("name", "env", "default"),
    [
        ("batch_wait", "LOGIN_ETL_BATCH_WAIT", 1000),
        ("batch_size", "LOGIN_ETL_BATCH_SIZE", 500),
        ("concurrency", "LOGIN_ETL_CONCURRENCY", 4),
        ("wait_time", "LOGIN_ETL_WAIT_TIME", 20),
    ],
)
@pytest.mark.parametrize("source", ["flag", "env"])
def test_an_empty_value_means_the_default(name: str, env: str, default: int, source: str) -> None:
    """`LOGIN_ETL_BATCH_WAIT=` (set but empty, as templating often leaves it) is the default."""
    settings = Settings.load(
        {name: ""} if source == "flag" else {}, {env: ""} if source == "env" else {}
    )
    assert getattr(settings, name) == default
    assert settings == Settings()  # and nothing else moved


def test_max_in_flight_below_batch_size() -> None:
    assert load(LOGIN_ETL_BATCH_SIZE="600").batch_size == 600  # default max_in_flight: 2000
    with pytest.raises(ConfigError, match="--max-in-flight .*--batch-size"):
        load(LOGIN_ETL_BATCH_SIZE="600", LOGIN_ETL_MAX_IN_FLIGHT="599")
    with pytest.raises(ConfigError, match="--max-in-flight .*--batch-size"):
        load({"max_in_flight": "10"}, LOGIN_ETL_BATCH_SIZE="11")
    assert load(LOGIN_ETL_BATCH_SIZE="600", LOGIN_ETL_MAX_IN_FLIGHT="600").max_in_flight == 600


def test_require_queue() -> None:
    with pytest.raises(ConfigError, match="LOGIN_ETL_QUEUE_URL"):
        load().require_queue()
    with pytest.raises(ConfigError, match="LOGIN_ETL_QUEUE_URL"):
        load(LOGIN_ETL_QUEUE_URL="").require_queue()
    assert load(LOGIN_ETL_QUEUE_URL="http://q").require_queue() == "http://q"


def test_masker_from_keys() -> None:
    masker = load(
        LOGIN_ETL_MASKING_KEY=KEY_B_TEXT, LOGIN_ETL_MASKING_OLD_KEYS=f" {KEY_A_TEXT} ,,"
    ).masker()
    assert isinstance(masker, Masker)
    assert masker.key_id == key_id(KEY_B)
    assert masker.old_key_ids == [key_id(KEY_A)]
    assert masker.unmask("ip", Masker(KEY_A).mask("ip", "1.2.3.4")) == "1.2.3.4"


@pytest.mark.parametrize("key", [None, "", "   "])
def test_masker_without_key(key: str | None) -> None:
    env = {} if key is None else {"LOGIN_ETL_MASKING_KEY": key}
    with pytest.raises(ConfigError, match="LOGIN_ETL_MASKING_KEY"):
        Settings.load({}, env).masker()


@pytest.mark.parametrize("key", ["short-key", "!!!!", KEY_A_TEXT[:40] + "=="])
def test_masker_with_invalid_key(key: str) -> None:
    with pytest.raises(ConfigError, match="LOGIN_ETL_MASKING_KEY") as info:
        load(LOGIN_ETL_MASKING_KEY=key).masker()
    assert key not in str(info.value)


def test_masker_with_invalid_old_key() -> None:
    with pytest.raises(ConfigError, match=r"LOGIN_ETL_MASKING_OLD_KEYS\[1\]") as info:
        load(
            LOGIN_ETL_MASKING_KEY=KEY_A_TEXT,
            LOGIN_ETL_MASKING_OLD_KEYS=f"{KEY_B_TEXT},not-a-key",
        ).masker()
    assert "not-a-key" not in str(info.value)
    assert KEY_B_TEXT not in str(info.value)


def test_repr_hides_secrets() -> None:
    s = load(
        LOGIN_ETL_DATABASE_URL=DB_URL,
        LOGIN_ETL_MASKING_KEY=KEY_A_TEXT,
        LOGIN_ETL_MASKING_OLD_KEYS=KEY_B_TEXT,
        LOGIN_ETL_QUEUE_URL="http://q",
    )
    for text in (repr(s), str(s)):
        assert "http://q" in text  # not a secret; shows repr is not just empty
        for secret in (PASSWORD, KEY_A_TEXT, KEY_A_TEXT[:16], KEY_B_TEXT[:16]):
            assert secret not in text


def test_settings_are_frozen() -> None:
    s = load()
    with pytest.raises(AttributeError):
        s.batch_size = 1  # type: ignore[misc]


def test_options() -> None:
    s = load(
        LOGIN_ETL_CONCURRENCY="2",
        LOGIN_ETL_BATCH_SIZE="50",
        LOGIN_ETL_BATCH_WAIT="250",
        LOGIN_ETL_WAIT_TIME="3",
        LOGIN_ETL_MAX_IN_FLIGHT="60",
        LOGIN_ETL_MAX_RETRY_TIME="9",
        LOGIN_ETL_SHUTDOWN_TIMEOUT="4",
    )
    assert s.options(drain=True, max_messages=7) == Options(
        concurrency=2,
        batch_size=50,
        batch_wait=0.25,
        wait_seconds=3,
        max_in_flight=60,
        drain=True,
        max_messages=7,
        max_retry_time=9.0,
        shutdown_timeout=4.0,
    )
