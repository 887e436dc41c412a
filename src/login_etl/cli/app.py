"""The command line's frame: the group, typed settings flags, one-line errors.

Each setting is a flag and a ``LOGIN_ETL_*`` variable (named in ``--help``).
Errors print one line; bad configuration exits 2, other failures exit 1.
The commands live beside this module: `worker` (run and the data it moves)
and `pii` (keys, audited recovery, rejections, rotation, roles).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from login_etl import __version__, logs, redact
from login_etl.config import SPECS, Settings, Spec
from login_etl.errors import ConfigError, LoginEtlError

F = TypeVar("F", bound=Callable[..., Any])

PIPELINE = (
    "queue_url",
    "sqs_protocol",
    "database_url",
    "masking_key",
    "masking_old_keys",
    "concurrency",
    "batch_size",
    "batch_wait_seconds",
    "wait_time",
    "max_in_flight",
    "max_retry_time",
    "shutdown_timeout",
    "metrics_port",
    "metrics_address",
    "lake_warehouse",
    "lake_extra_fields",
    "init_db",
    "log_format",
    "log_level",
)


class Failure(click.ClickException):
    """One clear line on stderr and exit 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        """Print ``login-etl: error: …``."""
        click.echo(f"login-etl: error: {redact.scrub(self.message)}", err=True)


class BadConfig(Failure):
    """Invalid configuration: one line and exit 2."""

    exit_code = 2


class Command(click.Command):
    """A command whose help ends with the secrets it reads from the environment only."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List env-only secrets (and their *_FILE form) after the options."""
        names = getattr(self.callback, "env_only", ())
        if names:
            with formatter.section("Secrets (environment only, never flags)"):
                formatter.write_dl([(f"{SPECS[n].env}[_FILE]", _help(SPECS[n])) for n in names])
        super().format_epilog(ctx, formatter)


class Group(click.Group):
    """Translates our errors into one-line failures."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; ConfigError → exit 2, other LoginEtlError → exit 1."""
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        except LoginEtlError as exc:
            raise Failure(str(exc)) from None
        except click.UsageError as exc:
            # A typo in a flag or a bad value (flag or env): one line, exit 2.
            raise BadConfig(exc.format_message()) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            # An unforeseen error: name it, but print no message text, which
            # could quote data. The traceback goes to the debug log.
            logging.getLogger("login_etl").debug("unexpected error", exc_info=True)
            state = getattr(exc, "sqlstate", None)
            detail = f" (SQLSTATE {state})" if state else ""
            raise Failure(f"unexpected {type(exc).__name__}{detail}") from None


def _help(spec: Spec) -> str:
    extra = [f"unit: {spec.unit}"] if spec.unit else []
    if spec.default not in (None, "", ()):
        default = str(spec.default).lower() if isinstance(spec.default, bool) else spec.default
        extra.append(f"default: {default}")
    return f"{spec.help} [{'; '.join(extra)}]" if extra else spec.help


def settings_options(*names: str) -> Callable[[F], F]:
    """One typed flag per named setting; `--help` shows its type, unit, default and variable.

    Secrets that only the environment may carry get no flag. Values from the
    environment are parsed again by `Settings.load`, which also reads
    ``*_FILE`` secrets.
    """

    def decorate(fn: F) -> F:
        fn.env_only = [n for n in names if SPECS[n].flag is None]  # type: ignore[attr-defined]
        for name in reversed(names):
            spec = SPECS[name]
            if spec.flag is None:
                continue
            if spec.type is click.BOOL:
                flag = f"{spec.flag}/--no-{spec.flag[2:]}"
                fn = click.option(
                    flag, name, default=None, envvar=spec.env, show_envvar=True, help=_help(spec)
                )(fn)
            else:
                fn = click.option(
                    spec.flag,
                    name,
                    type=spec.type,
                    default=None,
                    envvar=spec.env,
                    show_envvar=True,
                    help=_help(spec),
                )(fn)
        return fn

    return decorate


def load(flags: dict[str, Any], *names: str) -> Settings:
    """Settings from the flags given on the command line (popped from `flags`) and the env."""
    ctx = click.get_current_context()
    given = {}
    for name in names:
        if name not in flags:
            continue
        value = flags.pop(name)
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            given[name] = value
    settings = Settings.load(given)
    if ctx.info_name != "run":  # `run` logs them itself, in the format its flags choose
        for note in settings.notes:
            logging.getLogger("login_etl").warning(note)
    return settings


EXIT_CODES = """\b
Exit codes:
  0  done (run: stopped by SIGTERM/SIGINT, drained, or --max-messages reached)
  1  a failure: an outage outlasted --max-retry-time, or PostgreSQL refused a statement
  2  bad configuration or usage: fix it before retrying (one error line says what)

\b
Reference: docs/cli.md (every command), docs/settings.md (every setting),
docs/troubleshooting.md (each error line, its cause and fix)."""


@click.group(cls=Group, epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="login-etl")
def cli() -> None:
    """Drain login events from SQS, mask PII, load them into PostgreSQL exactly once."""
    # Every command logs in the configured format; `run` also takes the flags.
    env = {n: os.environ.get(SPECS[n].env, "").strip().lower() for n in ("log_format", "log_level")}
    fmt = env["log_format"] if env["log_format"] in ("text", "json") else "text"
    level = (
        env["log_level"] if env["log_level"] in ("debug", "info", "warning", "error") else "info"
    )
    logs.configure(fmt, level)
    # Before any argument is parsed: a key pasted as an argument by mistake is
    # quoted back by click's own error, which `Failure.show` scrubs.
    redact.register(*(os.environ.get(SPECS[n].env) for n in SPECS if SPECS[n].secret))
