"""config.Settings.load: defaults, env, flags, validation and secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from login_etl.config import KEY_FILE_ADVICE, SPECS, Settings
from login_etl.errors import ConfigError
from login_etl.masking import Masker, key_id
from login_etl.pipeline import LOOP_ONLY, Options
from login_etl.service import pipeline_options
from tests.unit.helpers import KEY_A, KEY_A_TEXT, KEY_B, KEY_B_TEXT

PASSWORD = "s3cr3t-pa55word"
DB_URL = f"postgresql://etl:{PASSWORD}@db.example:5432/logins"


def load(flags: dict[str, Any] | None = None, **env: str) -> Settings:
    return Settings.load(flags or {}, env)


def test_defaults() -> None:
    s = load()
    assert s == Settings()
    assert (s.queue_url, s.database_url, s.masking_key, s.masking_old_keys) == (None, "", None, "")
    assert (s.concurrency, s.batch_size, s.batch_wait_seconds, s.wait_time) == (4, 500, 1.0, 20)
    assert (s.max_in_flight, s.max_retry_time, s.shutdown_timeout) == (2000, 300, 30)
    assert (s.metrics_port, s.init_db, s.log_format, s.log_level) == (0, True, "text", "info")
    assert s.notes == ()


def test_every_field_has_a_spec_with_env_and_flag() -> None:
    names = set(Settings.__dataclass_fields__) - {"notes"}
    assert names == set(SPECS)
    for name, spec in SPECS.items():
        assert spec.env == "LOGIN_ETL_" + name.upper()
        if name in ("masking_key", "masking_old_keys"):
            assert spec.flag is None and spec.secret  # keys: environment or file only
        else:
            assert spec.flag == "--" + name.replace("_", "-")
        assert spec.help
        assert Settings.__dataclass_fields__[name].default == spec.default


def test_env_values_are_parsed() -> None:
    s = load(
        LOGIN_ETL_QUEUE_URL="http://sqs.local/000/login-queue",
        LOGIN_ETL_DATABASE_URL=DB_URL,
        LOGIN_ETL_MASKING_KEY=KEY_A_TEXT,
        LOGIN_ETL_CONCURRENCY=" 8 ",
        LOGIN_ETL_BATCH_SIZE="100",
        LOGIN_ETL_BATCH_WAIT_SECONDS="0.25",
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
    assert (s.concurrency, s.batch_size, s.batch_wait_seconds, s.wait_time) == (8, 100, 0.25, 0)
    assert (s.max_in_flight, s.max_retry_time, s.shutdown_timeout) == (100, 5, 7)
    assert (s.metrics_port, s.init_db, s.log_format, s.log_level) == (9100, False, "json", "debug")


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


@pytest.mark.parametrize("value", ["1", "true", "YES", "On", " true "])
def test_bool_true(value: str) -> None:
    assert load(LOGIN_ETL_INIT_DB=value).init_db is True


@pytest.mark.parametrize("value", ["0", "false", "NO", "off"])
def test_bool_false(value: str) -> None:
    assert load(LOGIN_ETL_INIT_DB=value).init_db is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("batch_size", "abc", "not a valid integer"),
        ("batch_size", "1.5", "not a valid integer"),
        ("batch_size", "0", "1<=x<=10000"),
        ("batch_size", "10001", "1<=x<=10000"),
        ("concurrency", "-1", "1<=x<=64"),
        ("concurrency", "65", "1<=x<=64"),
        ("wait_time", "21", "0<=x<=20"),
        ("max_in_flight", "9", "10<=x<=100000"),
        ("metrics_port", "70000", "0<=x<=65535"),
        ("metrics_address", "localhost", "expected an IP address"),
        ("metrics_address", "0.0.0.0:9108", "expected an IP address"),
        ("max_retry_time", "0", "1<=x<=86400"),
        ("batch_wait_seconds", "0", "0.001<=x<=600"),
        ("batch_wait_seconds", "soon", "not a valid float"),
        ("init_db", "maybe", "not a valid boolean"),
        ("log_format", "xml", "'text', 'json'"),
        ("log_level", "trace", "'debug', 'info', 'warning', 'error'"),
        ("sqs_protocol", "xml", "'auto', 'json', 'query'"),
    ],
)
def test_invalid_values_name_flag_and_env(name: str, value: str, message: str) -> None:
    spec = SPECS[name]
    for source in ("flag", "env"):
        flags = {name: value} if source == "flag" else {}
        env = {spec.env: value} if source == "env" else {}
        with pytest.raises(ConfigError, match=message) as info:
            Settings.load(flags, env)
        assert (spec.flag if source == "flag" else spec.env) in str(info.value)


def test_the_metrics_port_listens_on_loopback_unless_told() -> None:
    assert load().metrics_address == "127.0.0.1"
    assert load(LOGIN_ETL_METRICS_ADDRESS="0.0.0.0").metrics_address == "0.0.0.0"
    assert load({"metrics_address": "::"}).metrics_address == "::"


@pytest.mark.parametrize("name", sorted(set(SPECS) - {"database_url", "masking_key"}))
def test_an_empty_variable_means_the_default(name: str) -> None:
    spec = SPECS[name]
    assert getattr(Settings.load({}, {spec.env: ""}), name) == spec.default
    assert getattr(Settings.load({}, {spec.env: "  "}), name) == spec.default


def test_the_sqs_protocol_is_found_unless_forced() -> None:
    assert load().sqs_protocol == "auto"
    assert load(LOGIN_ETL_SQS_PROTOCOL="Query").sqs_protocol == "query"


def test_log_choices_are_case_insensitive() -> None:
    s = load(LOGIN_ETL_LOG_FORMAT="JSON", LOGIN_ETL_LOG_LEVEL="Warning")
    assert (s.log_format, s.log_level) == ("json", "warning")


# -- secrets: environment or *_FILE, never a flag with a password -------------------------


def test_secrets_from_files(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A_TEXT + "\n")
    url_file = tmp_path / "url"
    url_file.write_text(DB_URL + "\n")
    old_file = tmp_path / "old"
    old_file.write_text(f"{KEY_B_TEXT}\n")
    for f in (key_file, url_file, old_file):
        f.chmod(0o440)  # group-readable, as a Kubernetes secret volume with fsGroup
    s = load(
        LOGIN_ETL_MASKING_KEY_FILE=str(key_file),
        LOGIN_ETL_DATABASE_URL_FILE=str(url_file),
        LOGIN_ETL_MASKING_OLD_KEYS_FILE=str(old_file),
    )
    assert (s.masking_key, s.database_url, s.masking_old_keys) == (KEY_A_TEXT, DB_URL, KEY_B_TEXT)
    assert s.notes == ()
    assert s.masker().old_key_ids == [key_id(KEY_B)]


def test_a_world_readable_secret_file_is_noted(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A_TEXT)
    key_file.chmod(0o644)
    s = load(LOGIN_ETL_MASKING_KEY_FILE=str(key_file))
    assert s.masking_key == KEY_A_TEXT
    assert len(s.notes) == 1 and "readable by every user" in s.notes[0]
    assert KEY_A_TEXT not in s.notes[0]


def test_secret_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="LOGIN_ETL_MASKING_KEY_FILE: cannot read"):
        load(LOGIN_ETL_MASKING_KEY_FILE=str(tmp_path / "missing"))
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A_TEXT)
    with pytest.raises(ConfigError, match="not both") as info:
        load(LOGIN_ETL_MASKING_KEY_FILE=str(key_file), LOGIN_ETL_MASKING_KEY=KEY_A_TEXT)
    assert KEY_A_TEXT not in str(info.value)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(LOGIN_ETL_DATABASE_URL_FILE=str(binary))


@pytest.mark.parametrize(
    "url",
    [
        DB_URL,
        f"postgres://etl:{PASSWORD}@db/logins",
        f"postgresql://:{PASSWORD}@db/logins",
        f"host=db user=etl password={PASSWORD}",
        f"postgresql://etl@db/logins?password={PASSWORD}",
        f"postgresql://etl@db/logins?sslmode=require&password={PASSWORD}",
        f"postgresql://etl@db/logins?%70assword={PASSWORD}",  # libpq percent-decodes names
        f"postgresql://etl@db/logins?pass%77ord={PASSWORD}",
    ],
)
def test_a_database_url_flag_with_a_password_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="LOGIN_ETL_DATABASE_URL_FILE") as info:
        load({"database_url": url})
    assert PASSWORD not in str(info.value)
    assert load(LOGIN_ETL_DATABASE_URL=url).database_url == url  # from the environment: fine


@pytest.mark.parametrize(
    "url", ["postgresql://etl@db:5432/logins", "host=db user=etl dbname=logins", ""]
)
def test_a_database_url_flag_without_a_password_is_fine(url: str) -> None:
    assert load({"database_url": url}).database_url == url


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


def test_pipeline_options_map_every_loop_setting() -> None:
    s = load(
        LOGIN_ETL_CONCURRENCY="2",
        LOGIN_ETL_BATCH_SIZE="50",
        LOGIN_ETL_BATCH_WAIT_SECONDS="0.25",
        LOGIN_ETL_WAIT_TIME="3",
        LOGIN_ETL_MAX_IN_FLIGHT="60",
        LOGIN_ETL_MAX_RETRY_TIME="9",
        LOGIN_ETL_SHUTDOWN_TIMEOUT="4",
    )
    assert pipeline_options(s, drain=True, max_messages=7, visibility_timeout=45) == Options(
        concurrency=2,
        batch_size=50,
        batch_wait_seconds=0.25,
        wait_time=3,
        max_in_flight=60,
        drain=True,
        max_messages=7,
        max_retry_time=9.0,
        shutdown_timeout=4.0,
        visibility_timeout=45,
        # Two connects (10 s each) and two bounded queries (the key check, the write).
        sink_timeout=2 * (10 + 9.0),
    )


def test_each_loop_option_is_named_as_its_setting() -> None:
    """One name per concept from flag to loop: an option is a setting of the same name
    (and is filled from it), or is listed as the loop's own."""
    options, settings = set(Options.__dataclass_fields__), set(Settings.__dataclass_fields__)
    assert options - LOOP_ONLY <= settings, "an option named unlike its setting"
    assert not LOOP_ONLY & settings, "a setting listed as loop-only"
    assert LOOP_ONLY <= options
    s = load(
        LOGIN_ETL_CONCURRENCY="3",
        LOGIN_ETL_BATCH_SIZE="70",
        LOGIN_ETL_BATCH_WAIT_SECONDS="0.5",
        LOGIN_ETL_WAIT_TIME="7",
        LOGIN_ETL_MAX_IN_FLIGHT="90",
        LOGIN_ETL_MAX_RETRY_TIME="11",
        LOGIN_ETL_SHUTDOWN_TIMEOUT="6",
        LOGIN_ETL_LAKE_EXTRA_FIELDS="a,b",
    )
    opts = pipeline_options(s)
    for name in options - LOOP_ONLY:
        value = getattr(opts, name)
        assert value == type(value)(getattr(s, name)), name


# -- unknown LOGIN_ETL_* variables ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("LOGIN_ETL_BATCHSIZE", "LOGIN_ETL_BATCH_SIZE"),
        ("LOGIN_ETL_QUEUE", "LOGIN_ETL_QUEUE_URL"),
        ("LOGIN_ETL_MASKING_KEY_FLIE", "LOGIN_ETL_MASKING_KEY_FILE"),
        ("LOGIN_ETL_BATCH_WAIT", "LOGIN_ETL_BATCH_WAIT_SECONDS"),  # the old milliseconds name
    ],
)
def test_an_unknown_variable_is_noted_with_the_closest_known_one(name: str, closest: str) -> None:
    s = load(**{name: "10"})
    note = f"{name} is not a login-etl setting and is ignored: did you mean {closest}?"
    assert s.notes == (note,)
    assert s.batch_size == 500  # ignored, not guessed


def test_variables_login_etl_reads_elsewhere_are_not_noted() -> None:
    s = load(LOGIN_ETL_PG_BINDIR="/usr/lib/postgresql/15/bin", LOGIN_ETL_AIRFLOW_RETRIES="3")
    assert s.notes == ()


def test_an_unknown_variable_with_no_close_name_points_at_the_reference() -> None:
    (note,) = load(LOGIN_ETL_ZZZZZZZZZZZZZZ="1").notes
    assert note.endswith("(see docs/settings.md)")


def test_the_key_file_warning_and_the_docs_give_the_same_advice(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY_A_TEXT)
    key_file.chmod(0o644)
    (note,) = load(LOGIN_ETL_MASKING_KEY_FILE=str(key_file)).notes
    assert note.endswith(KEY_FILE_ADVICE)
    for fix in ("chmod 0400", "chown 10001", "defaultMode: 0400", "fsGroup"):
        assert fix in KEY_FILE_ADVICE
    security = (Path(__file__).parents[2] / "docs" / "security.md").read_text("utf-8")
    assert f"> {KEY_FILE_ADVICE}\n" in security
