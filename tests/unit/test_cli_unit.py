"""The command line through click's CliRunner, without services."""

from __future__ import annotations

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


def test_keygen_key_works_for_unmask() -> None:
    key = invoke(["keygen"]).stdout.strip()
    mask = Masker(decode_key(key)).mask("ip", IP)
    result = invoke(["unmask", "--field", "ip", mask], env={"LOGIN_ETL_MASKING_KEY": key})
    assert result.exit_code == 0
    assert result.stdout == f"{IP}\n"


# -- unmask ---------------------------------------------------------------------


def test_unmask_with_key_from_env() -> None:
    mask = Masker(KEY_A).mask("ip", IP)
    result = invoke(["unmask", "--field", "ip", mask], env={"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT})
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{IP}\n"
    assert KEY_A_TEXT not in result.output


def test_unmask_several_masks() -> None:
    masker = Masker(KEY_A)
    masks = [masker.mask("device_id", v) for v in (DEVICE, "111-22-3333", DEVICE)]
    env = {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}
    result = invoke(["unmask", "--field", "device_id", *masks], env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [DEVICE, "111-22-3333", DEVICE]


@pytest.mark.parametrize("command", [["unmask", "--field", "ip"], ["run"], ["rekey"]])
@pytest.mark.parametrize("flag", ["--masking-key", "--masking-old-keys"])
def test_keys_are_never_taken_from_flags(command: list[str], flag: str) -> None:
    result = invoke([*command, flag, KEY_A_TEXT])
    line = assert_one_line_error(result, 2, "No such option", flag)
    assert KEY_A_TEXT not in line


def test_unmask_reads_masks_from_stdin() -> None:
    masker = Masker(KEY_A)
    stdin = f"{masker.mask('ip', '1.1.1.1')}\n\n  {masker.mask('ip', '2.2.2.2')}  \n"
    result = invoke(["unmask", "--field", "ip"], {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}, stdin)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["1.1.1.1", "2.2.2.2"]


def test_unmask_after_rotation_with_old_key() -> None:
    old_mask = Masker(KEY_A).mask("ip", IP)
    env = {"LOGIN_ETL_MASKING_KEY": KEY_B_TEXT, "LOGIN_ETL_MASKING_OLD_KEYS": KEY_A_TEXT}
    result = invoke(["unmask", "--field", "ip", old_mask], env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{IP}\n"


@pytest.mark.parametrize(
    "mask",
    ["garbage", "zzzzzzzz.AAAA", Masker(KEY_B).mask("ip", IP), Masker(KEY_A).mask("device_id", IP)],
    ids=["garbage", "unknown-key-id", "other-key", "other-field"],
)
def test_unmask_unknown_mask(mask: str) -> None:
    env = {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}
    result = invoke(["unmask", "--field", "ip", mask], env=env)
    assert_one_line_error(result, 1, "mask 1:")
    assert IP not in result.output


def test_unmask_reports_which_mask_failed_and_prints_nothing() -> None:
    good = Masker(KEY_A).mask("ip", IP)
    result = invoke(
        ["unmask", "--field", "ip", good, "bad"], env={"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT}
    )
    assert_one_line_error(result, 1, "mask 2:")


def test_unmask_without_key() -> None:
    result = invoke(["unmask", "--field", "ip", Masker(KEY_A).mask("ip", IP)])
    assert_one_line_error(result, 2, "LOGIN_ETL_MASKING_KEY")


@pytest.mark.parametrize("key", ["not-a-key", KEY_A_TEXT[:20], "QUJD"])
def test_unmask_with_invalid_key(key: str) -> None:
    result = invoke(["unmask", "--field", "ip", "x.y"], env={"LOGIN_ETL_MASKING_KEY": key})
    line = assert_one_line_error(result, 2, "LOGIN_ETL_MASKING_KEY")
    assert key not in line


def test_unmask_invalid_field_choice() -> None:
    result = invoke(["unmask", "--field", "user_id", "x"], {"LOGIN_ETL_MASKING_KEY": KEY_A_TEXT})
    assert result.exit_code == 2
    assert "user_id" in result.stderr


# -- run: configuration errors never reach the network -------------------------------


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--batch-size", "abc"], {}, ["--batch-size", "not a valid integer"]),
        ([], {"LOGIN_ETL_CONCURRENCY": "0"}, ["LOGIN_ETL_CONCURRENCY", "1<=x<=64"]),
        (["--log-format", "xml"], {}, ["--log-format", "'text', 'json'"]),
        (["--batch-sise", "10"], {}, ["No such option", "--batch-sise", "--batch-size"]),
        ([], {"LOGIN_ETL_BATCH_WAIT_SECONDS": "0"}, ["LOGIN_ETL_BATCH_WAIT_SECONDS", "0.001"]),
        ([], {"LOGIN_ETL_BATCH_WAIT": "-5"}, ["LOGIN_ETL_BATCH_WAIT", "1<=x<=600000"]),
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
    ],
    ids=[
        "batch-size-abc",
        "concurrency-0",
        "log-format",
        "flag-typo",
        "batch-wait-zero",
        "old-batch-wait-negative",
        "in-flight-below-batch",
        "init-db",
        "no-key",
        "short-key",
        "non-base64-key",
        "no-queue",
        "bad-old-key",
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
        ("unmask", ["LOGIN_ETL_MASKING_KEY", "LOGIN_ETL_MASKING_OLD_KEYS"]),
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

    def explode(settings):
        raise RuntimeError("value 203.0.113.7 leaked")

    monkeypatch.setattr(cli_module.service, "init_db", explode)
    result = CliRunner().invoke(cli_module.cli, ["init-db"])
    assert result.exit_code == 1
    assert result.output.strip() == "login-etl: error: unexpected RuntimeError"
    assert "203.0.113.7" not in result.output
