"""Settings: one frozen object, read once, validated at start.

Each setting is declared once, as a field of `Settings` carrying its `Spec`:
help, click type (which parses and validates it), unit, default, and whether
it is a secret. From that come the ``LOGIN_ETL_*`` variable, the CLI flag and
its ``--help`` line. A flag wins over the variable, the variable over the
default. libpq's own ``PG*`` variables apply when no database URL is given,
and AWS settings come from boto3's standard chain (``AWS_ENDPOINT_URL``,
``AWS_REGION``, credentials).

Secrets (the masking keys, the database URL) come only from the environment
or from a file named by ``<VARIABLE>_FILE`` (Docker and Kubernetes secrets):
never from a flag, which ``ps`` and shell history would show. The database
URL keeps its flag for password-less URLs; one carrying a password is refused.
Secrets never appear in ``repr``.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import click

from login_etl import secretenv
from login_etl.errors import ConfigError
from login_etl.fields import STORED
from login_etl.masking import Masker


@dataclass(frozen=True)
class Spec:
    """How one setting is named, typed, defaulted and described."""

    name: str
    help: str
    type: click.ParamType[Any]
    default: Any = None
    unit: str | None = None
    secret: bool = False  # read from the environment or a *_FILE only
    flag_allowed: bool = True  # secrets with a flag (the database URL) refuse passwords

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "LOGIN_ETL_" + self.name.upper()

    @property
    def flag(self) -> str | None:
        """The CLI flag that sets it, or None for a secret that only the environment carries."""
        return "--" + self.name.replace("_", "-") if self.flag_allowed else None

    @property
    def where(self) -> str:
        """How an error names this setting: flag and variable."""
        return f"{self.flag} / {self.env}" if self.flag else self.env

    def convert(self, raw: Any, where: str | None = None) -> Any:
        """Parse `raw` with this setting's click type; a bad value is a ConfigError."""
        try:
            return self.type.convert(raw.strip() if isinstance(raw, str) else raw, None, None)
        except click.BadParameter as exc:
            raise ConfigError(f"{where or self.where}: {exc.message}") from None


def setting(
    help: str,
    type: click.ParamType[Any],
    default: Any = None,
    *,
    unit: str | None = None,
    secret: bool = False,
    flag: bool = True,
) -> Any:
    """A `Settings` field carrying what its `Spec` needs (the name comes from the field)."""
    spec = {"help": help, "type": type, "default": default, "unit": unit, "secret": secret}
    return field(default=default, repr=not secret, metadata={**spec, "flag_allowed": flag})


class Warehouse(click.ParamType):  # type: ignore[type-arg]
    """An Iceberg warehouse location: ``file:///absolute/path`` or ``s3://bucket[/prefix]``."""

    name = "url"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        """The location without a trailing slash, or a usage error."""
        text = str(value).strip().rstrip("/")
        if text.startswith("file:///") and len(text) > len("file:///"):
            return text
        if text.startswith("s3://") and text[5:].split("/")[0]:
            return text
        self.fail("expected file:///absolute/path or s3://bucket/prefix", param, ctx)


class FieldNames(click.ParamType):  # type: ignore[type-arg]
    """Comma-separated flattened field names (``campaign,geo_city``), as a sorted tuple."""

    name = "names"
    _NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        """The distinct names, or a usage error naming the first bad one."""
        if isinstance(value, tuple):
            return value
        names = [n.strip() for n in str(value).split(",")]
        for name in names:
            if not self._NAME.fullmatch(name):
                self.fail(
                    f"{name!r} is not a field name (1-256 of A-Z a-z 0-9 _ . -, comma-separated)",
                    param,
                    ctx,
                )
            if name in STORED:
                self.fail(f"{name!r} is a column of its own, never an extra field", param, ctx)
        return tuple(sorted(set(names)))


class IPAddress(click.ParamType):  # type: ignore[type-arg]
    """An IPv4 or IPv6 address literal."""

    name = "address"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        """The address in its canonical spelling, or a usage error."""
        try:
            return str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            self.fail("expected an IP address such as 127.0.0.1 or 0.0.0.0", param, ctx)


class Choice(click.Choice):  # type: ignore[type-arg]
    """Case-insensitive choice that returns the canonical lower-case spelling."""

    def __init__(self, *choices: str) -> None:
        super().__init__(choices, case_sensitive=False)

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        """The matching choice, lower-cased."""
        return str(super().convert(value, param, ctx)).lower()


@dataclass(frozen=True)
class Settings:
    """All settings, parsed and validated. Secrets are hidden from repr."""

    queue_url: str | None = setting("SQS queue URL to consume from.", click.STRING)
    sqs_protocol: str = setting(
        "SQS wire protocol: auto (found on first contact), json (AWS, LocalStack 3+) or "
        "query (LocalStack before 3.0, ElasticMQ before 1.4).",
        Choice("auto", "json", "query"),
        "auto",
    )
    database_url: str = setting(
        "PostgreSQL URI (libpq); when empty, libpq's PG* variables apply. A URL with a "
        "password only from the environment or LOGIN_ETL_DATABASE_URL_FILE.",
        click.STRING,
        "",
        secret=True,
    )
    masking_key: str | None = setting(
        "Base64 512-bit master key (login-etl keygen), or kms:<base64 CiphertextBlob> "
        "(login-etl keygen --kms-key-id), decrypted by AWS KMS at start.",
        click.STRING,
        secret=True,
        flag=False,
    )
    masking_old_keys: str = setting(
        "Comma-separated older keys (either form), accepted for unmasking and rekey only.",
        click.STRING,
        "",
        secret=True,
        flag=False,
    )
    concurrency: int = setting("Receiver threads.", click.IntRange(1, 64), 4)
    batch_size: int = setting("Messages per database transaction.", click.IntRange(1, 10_000), 500)
    batch_wait_seconds: float = setting(
        "Longest wait to fill a batch.", click.FloatRange(0.001, 600), 1.0, unit="seconds"
    )
    wait_time: int = setting("SQS long-poll wait.", click.IntRange(0, 20), 20, unit="seconds")
    max_in_flight: int = setting("Most messages held at once.", click.IntRange(10, 100_000), 2000)
    max_retry_time: int = setting(
        "How long an outage may last before the worker gives up.",
        click.IntRange(1, 86_400),
        300,
        unit="seconds",
    )
    shutdown_timeout: int = setting(
        "Time to finish in-hand work on SIGTERM.", click.IntRange(1, 3600), 30, unit="seconds"
    )
    metrics_port: int = setting(
        "Serve /metrics, /healthz and /readyz on this port (0: off).", click.IntRange(0, 65535), 0
    )
    metrics_address: str = setting(
        "Address the metrics port listens on: 0.0.0.0 (or ::) for every interface, as "
        "Kubernetes probes and Prometheus need in a pod.",
        IPAddress(),
        "127.0.0.1",
    )
    lake_warehouse: str | None = setting(
        "Lake stage: Iceberg warehouse for every loaded event (file:///path or "
        "s3://bucket/prefix; needs the [lake] extra). Unset: no lake.",
        Warehouse(),
    )
    lake_extra_fields: tuple[str, ...] = setting(
        "Lake stage: the event's other fields kept in the lake's extra column, by flattened "
        "name (comma-separated, e.g. campaign,geo_city); every other field is left out, and "
        "a kept one still is when it holds an address or the event's own ip or device id.",
        FieldNames(),
        (),
    )
    init_db: bool = setting("Create missing tables before running.", click.BOOL, True)
    log_format: str = setting("Log format.", Choice("text", "json"), "text")
    log_level: str = setting("Log level.", Choice("debug", "info", "warning", "error"), "info")
    # What loading noticed (unknown variables, loose file modes): logged once logging is up.
    notes: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Read settings: a flag (not None) wins over the env variable, then the default."""
        flags = flags or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        notes: list[str] = []
        for spec in SPECS.values():
            raw, where = flags.get(spec.name), spec.flag
            if raw is not None and spec.secret:
                _refuse_secret_flag(spec, str(raw))
            if raw is None:
                raw, where = secretenv.from_env(spec.env, env, notes, secret=spec.secret)
            if isinstance(raw, str) and not spec.secret:
                raw = raw.strip()
            if raw is None or (raw == "" and not spec.secret):
                continue
            values[spec.name] = spec.convert(raw, where)
        notes += unknown_variables(env)
        settings = cls(**values, notes=tuple(notes))
        # Before anything can fail on them: error and log lines must never show these.
        secretenv.register(settings.database_url, settings.masking_key, settings.masking_old_keys)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-setting checks."""
        url = self.database_url.strip()
        if len(url) >= 2 and url[0] == url[-1] and url[0] in "'\"":
            raise ConfigError(
                "LOGIN_ETL_DATABASE_URL is wrapped in quotes (as `docker --env-file` keeps "
                "them): remove the quotes"
            )
        if self.max_in_flight < self.batch_size:
            raise ConfigError(
                f"--max-in-flight ({self.max_in_flight}) must be at least "
                f"--batch-size ({self.batch_size})"
            )

    def require_queue(self) -> str:
        """The queue URL, or a ConfigError naming the setting."""
        if not self.queue_url:
            raise ConfigError("no queue: set LOGIN_ETL_QUEUE_URL or --queue-url")
        return self.queue_url

    def masker(self) -> Masker:
        """The masker built from the configured keys, or a ConfigError.

        A key written ``kms:<base64 CiphertextBlob>`` is decrypted by AWS KMS
        here; the key it yields is registered with `redact` at once.
        """
        return secretenv.masker(self.masking_key, self.masking_old_keys)


SPECS: dict[str, Spec] = {
    f.name: Spec(f.name, **f.metadata) for f in fields(Settings) if f.metadata
}

# Variables of ours that are not settings: the PostgreSQL binaries the demo and
# tests use, and the Airflow DAG's own (deploy/airflow), which share its environment.
OTHER_VARIABLES = ("LOGIN_ETL_PG_BINDIR",)
OTHER_PREFIXES = ("LOGIN_ETL_AIRFLOW_",)

KEY_FILE_ADVICE = secretenv.KEY_FILE_ADVICE


def known_variables() -> list[str]:
    """Every ``LOGIN_ETL_*`` variable login-etl reads (settings, their ``_FILE`` forms, others)."""
    names = [s.env for s in SPECS.values()]
    names += [s.env + "_FILE" for s in SPECS.values() if s.secret]
    return names + list(OTHER_VARIABLES)


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One note per ``LOGIN_ETL_*`` variable login-etl does not read, naming the closest it does.

    A misspelt name would otherwise be ignored without a word and its default used.
    """
    known = known_variables()
    notes = []
    for name in sorted(env):
        if not name.startswith("LOGIN_ETL_") or name in known or name.startswith(OTHER_PREFIXES):
            continue
        # A name cut short (LOGIN_ETL_QUEUE) first, then the nearest spelling (difflib).
        close = [k for k in known if k.startswith(name + "_")]
        close = close or difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f": did you mean {close[0]}?" if close else " (see docs/settings.md)"
        notes.append(f"{name} is not a login-etl setting and is ignored{hint}")
    return notes


# userinfo with a password (user:pw@), or a password= keyword or query parameter.
_PASSWORD_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@|(^|[\s?&])password\s*=", re.IGNORECASE)


def has_password(url: str) -> bool:
    """True when a libpq URI or keyword string carries a password.

    libpq's own parser decides (it percent-decodes ``?%70assword=``); a string
    it cannot parse is judged by its shape.
    """
    import psycopg  # not at import: `login-etl --help` needs no database driver
    from psycopg.conninfo import conninfo_to_dict

    try:
        return bool(conninfo_to_dict(url).get("password"))
    except psycopg.Error:
        return bool(_PASSWORD_IN_URL.search(url))


def _refuse_secret_flag(spec: Spec, value: str) -> None:
    if spec.flag is None or has_password(value):
        raise ConfigError(
            f"{spec.flag or spec.name} must not carry a password on the command line "
            f"(ps and shell history show it): set {spec.env} or {spec.env}_FILE"
        )
