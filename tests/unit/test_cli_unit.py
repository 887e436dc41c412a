"""The command line through click's CliRunner, without services."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from login_etl.cli import PIPELINE, cli
from login_etl.config import SPECS
from login_etl.masking import KEY_BYTES, Masker, decode_key
from tests.unit.helpers import KEY_A, KEY_A_TEXT, KEY_B, KEY_B_TEXT

IP = "199.172.111.135"
DEVICE = "593-47-5928"


def invoke(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env, input=stdin, prog_name="login-etl")


def assert_one_line_error(result: Result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("login-etl: error: "), line
    for fragment in fragments:
        assert fragment in line
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return line


# -- keygen ---------------------------------------------------------------------


def test_keygen_prints_a_valid_key() -> None:
    first, second = invoke(["keygen"]), invoke(["keygen"])
    assert first.exit_code == 0 and second.exit_code == 0
    key = first.stdout.strip()
    assert len(first.stdout.splitlines()) == 1
    assert len(decode_key(key)) == KEY_BYTES
    assert key != second.stdout.strip()


# -- unmask: every refusal comes before any key or database is touched -----------
# (revealing paths, which commit an audit row first, run on real PostgreSQL in
# tests/integration/test_pii.py)

WHY = ["--purpose", "case 1234"]
KEY_ENV = {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}
ZERO_KEY = "A" * 86 + "=="  # 64 zero bytes, base64


@pytest.mark.parametrize(
    "args",
    [
        ["unmask", "--field", "ip", Masker(KEY_A).mask("ip", IP)],
        ["unmask", "--user-id", "u-1"],
        ["unmask", "--field", "ip", "--actor", "alice", Masker(KEY_A).mask("ip", IP)],
    ],
    ids=["masks", "user-id", "actor-only"],
)
def test_unmask_without_purpose_reveals_nothing(args: list[str]) -> None:
    # A bad key too: the missing purpose is what stops it, before the key is read.
    result = invoke(args, env={"LOGIN_ETL_MASKING_KEY": "not-a-key"})
    assert_one_line_error(result, 2, "--purpose")
    assert IP not in result.output


@pytest.mark.parametrize(
    ("purpose", "fragment"),
    [("", "--purpose must not be empty"), ("   ", "must not be empty"), ("a\nb", "control")],
)
def test_unmask_with_a_blank_or_multiline_purpose(purpose: str, fragment: str) -> None:
    mask = Masker(KEY_A).mask("ip", IP)
    result = invoke(["unmask", "--field", "ip", "--purpose", purpose, mask], env=KEY_ENV)
    assert_one_line_error(result, 2, fragment)


def test_unmask_with_a_blank_actor() -> None:
    mask = Masker(KEY_A).mask("ip", IP)
    result = invoke(["unmask", "--field", "ip", *WHY, "--actor", " ", mask], env=KEY_ENV)
    assert_one_line_error(result, 2, "--actor must not be empty")


@pytest.mark.parametrize("command", [["unmask", "--field", "ip", *WHY], ["run"], ["rekey"]])
@pytest.mark.parametrize("flag", ["--masking-key", "--masking-old-keys"])
def test_keys_are_never_taken_from_flags(command: list[str], flag: str) -> None:
    result = invoke([*command, flag, KEY_A_TEXT])
    line = assert_one_line_error(result, 2, "No such option", flag)
    assert KEY_A_TEXT not in line


def _respelled(mask: str) -> str:
    kid, payload = mask.split(".")
    return f"{kid}.{payload}=="


@pytest.mark.parametrize(
    "mask",
    [
        "garbage",
        "zzzzzzzz.AAAA",
        Masker(KEY_B).mask("ip", IP),
        Masker(KEY_A).mask("device_id", IP),
        _respelled(Masker(KEY_A).mask("ip", IP)),
        "\x1b[2J.AAAA",
    ],
    ids=["garbage", "unknown-key-id", "other-key", "other-field", "padded", "escape-sequence"],
)
def test_unmask_unknown_mask(mask: str) -> None:
    result = invoke(["unmask", "--field", "ip", *WHY, mask], env=KEY_ENV)
    line = assert_one_line_error(result, 1, "mask 1:")
    assert IP not in result.output
    assert "\x1b" not in line


def test_unmask_reports_which_mask_failed_and_prints_nothing() -> None:
    good = Masker(KEY_A).mask("ip", IP)
    result = invoke(["unmask", "--field", "ip", *WHY, good, "bad"], env=KEY_ENV)
    assert_one_line_error(result, 1, "mask 2:")


def test_unmask_failure_on_stdin_names_the_line() -> None:
    masker = Masker(KEY_A)
    stdin = f"{masker.mask('ip', '1.1.1.1')}\n\nbad\n"
    result = invoke(["unmask", "--field", "ip", *WHY], KEY_ENV, stdin)
    assert_one_line_error(result, 1, "mask 3:")
    assert "1.1.1.1" not in result.output


def test_unmask_without_key() -> None:
    result = invoke(["unmask", "--field", "ip", *WHY, Masker(KEY_A).mask("ip", IP)])
    assert_one_line_error(result, 2, "LOGIN_ETL_MASKING_KEY")


@pytest.mark.parametrize("key", ["not-a-key", KEY_A_TEXT[:20], "QUJD"])
def test_unmask_with_invalid_key(key: str) -> None:
    result = invoke(["unmask", "--field", "ip", *WHY, "x.y"], env={"LOGIN_ETL_MASKING_KEY": key})
    line = assert_one_line_error(result, 2, "LOGIN_ETL_MASKING_KEY")
    assert key not in line


def test_unmask_invalid_field_choice() -> None:
    result = invoke(["unmask", "--field", "user_id", *WHY, "x"], KEY_ENV)
    assert result.exit_code == 2
    assert "user_id" in result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["unmask", *WHY, "x.y"], "give --field ip or --field device_id"),
        (["unmask", *WHY, "--user-id", "u", "x.y"], "not both"),
    ],
)
def test_unmask_argument_errors(args: list[str], fragment: str) -> None:
    assert_one_line_error(invoke(args, env=KEY_ENV), 2, fragment)


# -- rejects list: bodies need a purpose -------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--show-bodies"], "--purpose"),
        (["--show-bodies", "--reveal-pii"], "--purpose"),
        (["--show-bodies", "--purpose", " "], "must not be empty"),
        (["--reveal-pii", "--purpose", "x"], "--reveal-pii needs --show-bodies"),
    ],
)
def test_rejects_list_bodies_need_a_purpose(args: list[str], fragment: str) -> None:
    result = invoke(["rejects", "list", *args], env={"LOGIN_ETL_MASKING_KEY": "not-a-key"})
    assert_one_line_error(result, 2, fragment)


# -- keygen with KMS and grant: argument errors ---------------------------------------


def test_keygen_kms_without_region_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    result = invoke(["keygen", "--kms-key-id", "alias/x"])
    assert_one_line_error(result, 2, "KMS", "AWS_REGION")


@pytest.mark.parametrize("args", [["grant"], ["grant", "owner", "r"], ["grant", "writer"]])
def test_grant_argument_errors(args: list[str]) -> None:
    result = invoke(args)
    assert result.exit_code == 2
    assert result.stdout == ""


# -- run: configuration errors never reach the network -------------------------------


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--batch-size", "abc"], {}, ["--batch-size", "not a valid integer"]),
        ([], {"LOGIN_ETL_CONCURRENCY": "0"}, ["LOGIN_ETL_CONCURRENCY", "1<=x<=64"]),
        (["--log-format", "xml"], {}, ["--log-format", "'text', 'json'"]),
        (["--batch-sise", "10"], {}, ["No such option", "--batch-sise", "--batch-size"]),
        ([], {"LOGIN_ETL_BATCH_WAIT_SECONDS": "0"}, ["LOGIN_ETL_BATCH_WAIT_SECONDS", "0.001"]),
        (["--batch-size", "600", "--max-in-flight", "500"], {}, ["--max-in-flight"]),
        ([], {"LOGIN_ETL_INIT_DB": "perhaps"}, ["LOGIN_ETL_INIT_DB"]),
        ([], {}, ["no masking key", "LOGIN_ETL_MASKING_KEY"]),
        ([], {"LOGIN_ETL_MASKING_KEY": "c2hvcnQ="}, ["LOGIN_ETL_MASKING_KEY", "64 bytes"]),
        ([], {"LOGIN_ETL_MASKING_KEY": "%%%"}, ["LOGIN_ETL_MASKING_KEY", "not valid base64"]),
        ([], {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}, ["no queue", "LOGIN_ETL_QUEUE_URL"]),
        (
            [],
            {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT, "LOGIN_ETL_MASKING_OLD_KEYS": "bad"},
            ["LOGIN_ETL_MASKING_OLD_KEYS[0]"],
        ),
        ([], {"LOGIN_ETL_MASKING_KEY": ZERO_KEY}, ["LOGIN_ETL_MASKING_KEY", "not a random key"]),
        (
            [],
            {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT, "LOGIN_ETL_MASKING_OLD_KEYS": f"{ZERO_KEY}"},
            ["LOGIN_ETL_MASKING_OLD_KEYS[0]", "not a random key"],
        ),
    ],
    ids=[
        "batch-size-abc",
        "concurrency-0",
        "log-format",
        "flag-typo",
        "batch-wait-zero",
        "in-flight-below-batch",
        "init-db",
        "no-key",
        "short-key",
        "non-base64-key",
        "no-queue",
        "bad-old-key",
        "zero-key",
        "zero-old-key",
    ],
)
def test_run_with_bad_config(args: list[str], env: dict[str, str], fragments: list[str]) -> None:
    result = invoke(["run", *args], env=env)
    line = assert_one_line_error(result, 2, *fragments)
    assert KEY_A_TEXT not in line and KEY_B_TEXT not in line


def test_run_help_names_every_env_variable() -> None:
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in PIPELINE:
        assert SPECS[name].env in text, name
        assert SPECS[name].flag is None or SPECS[name].flag in text, name
    assert "--drain" in text and "--max-messages" in text
    # Types, units and choices are shown, not a bare TEXT.
    assert "--log-format [text|json]" in text
    assert "--concurrency INTEGER RANGE" in text
    assert "unit: seconds" in text
    assert "LOGIN_ETL_MASKING_KEY[_FILE]" in text
    assert "--masking-key" not in text


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("unmask", ["LOGIN_ETL_MASKING_KEY", "LOGIN_ETL_MASKING_OLD_KEYS", "--purpose"]),
        ("grant", ["LOGIN_ETL_DATABASE_URL", "writer", "analyst"]),
        ("seed", ["LOGIN_ETL_QUEUE_URL"]),
        ("init-db", ["LOGIN_ETL_DATABASE_URL"]),
    ],
)
def test_other_help_names_env_variables(command: str, variables: list[str]) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    for variable in variables:
        assert variable in result.stdout


def test_help_never_shows_secret_values() -> None:
    env = {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT, "LOGIN_ETL_DATABASE_URL": "postgresql://u:pw99@h"}
    result = CliRunner().invoke(cli, ["run", "--help"], env=env, terminal_width=200)
    assert KEY_A_TEXT not in result.output and "pw99" not in result.output


def test_version() -> None:
    result = invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("login-etl, version ")


# -- seed: argument errors before any network -------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give either FILE or --synthetic N"),
        (["--synthetic", "3", "somefile.json"], "give either FILE or --synthetic N"),
        (["--synthetic", "3"], "LOGIN_ETL_QUEUE_URL"),
        (["missing-file.json", "--queue-url", "http://q"], "cannot read"),
    ],
)
def test_seed_bad_arguments(args: list[str], fragment: str) -> None:
    result = invoke(["seed", *args])
    assert_one_line_error(result, 2, fragment)


def test_seed_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[{oops")
    result = invoke(["seed", str(path), "--queue-url", "http://q"])
    assert_one_line_error(result, 2, "not a valid JSON array")


def test_seed_file_without_queue(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('[{"a": 1}]')
    result = invoke(["seed", str(path)])
    assert_one_line_error(result, 2, "no queue")


def test_unexpected_error_is_one_line_without_its_message(monkeypatch) -> None:
    from click.testing import CliRunner

    from login_etl import cli as cli_module
    from login_etl import service

    def explode(settings):
        raise RuntimeError("value 203.0.113.7 leaked")

    monkeypatch.setattr(service, "init_db", explode)
    result = CliRunner().invoke(cli_module.cli, ["init-db"])
    assert result.exit_code == 1
    assert result.output.strip() == "login-etl: error: unexpected RuntimeError"
    assert "203.0.113.7" not in result.output


def test_a_key_pasted_as_an_argument_is_not_echoed() -> None:
    result = invoke(["run", KEY_A_TEXT], env={"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT})
    line = assert_one_line_error(result, 2, "unexpected extra argument")
    assert KEY_A_TEXT not in result.output and KEY_A_TEXT[:20] not in line


# -- keygen --output: a key file only its owner reads ---------------------------------


def test_keygen_output_creates_a_key_file_of_mode_0400(tmp_path: Path) -> None:
    path = tmp_path / "masking_key"
    result = invoke(["keygen", "--output", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the key is in the file, not on the terminal
    assert path.stat().st_mode & 0o777 == 0o400
    assert len(decode_key(path.read_text().strip())) == KEY_BYTES
    assert path.read_text().strip() not in result.stderr


def test_keygen_output_never_overwrites_a_key(tmp_path: Path) -> None:
    path = tmp_path / "masking_key"
    path.write_text("the old key\n")
    result = invoke(["keygen", "--output", str(path)])
    assert_one_line_error(result, 2, str(path), "exists", "never overwrites")
    assert path.read_text() == "the old key\n"


def test_help_imports_no_driver_no_sdk_and_no_service() -> None:
    """`login-etl --help` (and every CronJob or Airflow drain's first step) pays only for
    click and the settings: the database driver, boto3, rich and the loop load when a
    command needs them."""
    import subprocess
    import sys

    code = (
        "import sys; from login_etl.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = ('psycopg', 'boto3', 'botocore', 'rich', 'prometheus_client', 'pyiceberg',"
        " 'login_etl.service', 'login_etl.pipeline')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_run_imports_no_metrics_lake_or_terminal_library_unless_configured() -> None:
    """`login-etl run` with default settings loads neither prometheus_client (the metrics
    port is off), pyiceberg nor pyarrow (the lake is off), nor rich (logs are JSON lines):
    each costs start-up CPU to every worker, CronJob and Airflow drain."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "from login_etl.cli import cli\n"
        "try:\n    cli(['run', '--drain'])\nexcept SystemExit:\n    pass\n"
        # What `run` goes on to build with default settings: the source and its clients.
        "from login_etl import service\n"
        "from login_etl.config import Settings\n"
        "os.environ.update(AWS_ACCESS_KEY_ID='x', AWS_SECRET_ACCESS_KEY='x',"
        " AWS_REGION='us-east-1')\n"
        "service.sqs_source(Settings(queue_url='http://127.0.0.1:9/123456789012/q'))\n"
        "heavy = ('prometheus_client', 'pyiceberg', 'pyarrow', 'rich')\n"
        "assert 'login_etl.service' in sys.modules and 'boto3' in sys.modules\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGIN_ETL_", "AWS_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    assert out.strip().splitlines()[-1] == "[]", out
