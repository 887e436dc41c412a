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

import base64
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import click
import psycopg
from psycopg.conninfo import conninfo_to_dict

from login_etl import kms, redact
from login_etl.errors import ConfigError
from login_etl.masking import Masker, check_key_length, decode_key


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


@dataclass(frozen=True)
class Alias:
    """A deprecated name that still works, in its old unit."""

    old: str
    new: str
    type: click.ParamType[Any]
    to_new: Callable[[Any], Any]
    note: str

    @property
    def env(self) -> str:
        """The old environment variable."""
        return "LOGIN_ETL_" + self.old.upper()

    @property
    def flag(self) -> str:
        """The old flag."""
        return "--" + self.old.replace("_", "-")


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
        "s3://bucket/prefix; needs login-etl[lake]). Unset: no lake.",
        Warehouse(),
    )
    init_db: bool = setting("Create missing tables before running.", click.BOOL, True)
    log_format: str = setting("Log format.", Choice("text", "json"), "text")
    log_level: str = setting("Log level.", Choice("debug", "info", "warning", "error"), "info")
    # What loading noticed (deprecated names, loose file modes): logged once logging is up.
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
                raw, where = _from_alias(spec, flags, notes)
            if raw is None:
                raw, where = _from_env(spec, env, notes)
            if raw is None:
                raw, where = _from_alias(spec, env, notes)
            if isinstance(raw, str) and not spec.secret:
                raw = raw.strip()
            if raw is None or (raw == "" and not spec.secret):
                continue
            values[spec.name] = spec.convert(raw, where)
        settings = cls(**values, notes=tuple(notes))
        # Before anything can fail on them: error and log lines must never show these.
        redact.register(settings.database_url, settings.masking_key, _password(settings))
        redact.register(*settings.masking_old_keys.split(","))
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
        if not self.masking_key:
            raise ConfigError(
                "no masking key: set LOGIN_ETL_MASKING_KEY or LOGIN_ETL_MASKING_KEY_FILE "
                "(make one with `login-etl keygen`)"
            )
        primary = _read_key(self.masking_key, "LOGIN_ETL_MASKING_KEY")
        old = [
            _read_key(k, f"LOGIN_ETL_MASKING_OLD_KEYS[{i}]")
            for i, k in enumerate(self.masking_old_keys.split(","))
            if k.strip()
        ]
        return Masker(primary, old)


def _read_key(text: str, name: str) -> bytes:
    """A 512-bit key from its base64 text, or from KMS for the ``kms:`` form."""
    if not kms.is_kms(text):
        return decode_key(text, name=name)
    raw = check_key_length(kms.decrypt_key(text, name=name), name=name)
    redact.register(
        base64.b64encode(raw).decode("ascii"),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    )
    return raw


SPECS: dict[str, Spec] = {
    f.name: Spec(f.name, **f.metadata) for f in fields(Settings) if f.metadata
}

ALIASES: dict[str, Alias] = {
    a.new: a
    for a in [
        Alias(
            "batch_wait",
            "batch_wait_seconds",
            click.IntRange(1, 600_000),
            lambda ms: ms / 1000,
            "in milliseconds; use --batch-wait-seconds / LOGIN_ETL_BATCH_WAIT_SECONDS",
        ),
    ]
}

# userinfo with a password (user:pw@), or a password= keyword or query parameter.
_PASSWORD_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@|(^|[\s?&])password\s*=", re.IGNORECASE)


def has_password(url: str) -> bool:
    """True when a libpq URI or keyword string carries a password.

    libpq's own parser decides (it percent-decodes ``?%70assword=``); a string
    it cannot parse is judged by its shape.
    """
    try:
        return bool(conninfo_to_dict(url).get("password"))
    except psycopg.Error:
        return bool(_PASSWORD_IN_URL.search(url))


def _password(settings: Settings) -> str | None:
    """The database URL's password as libpq reads it (percent-decoded), to scrub."""
    try:
        return str(conninfo_to_dict(settings.database_url).get("password") or "") or None
    except psycopg.Error:
        return None


def _refuse_secret_flag(spec: Spec, value: str) -> None:
    if spec.flag is None or has_password(value):
        raise ConfigError(
            f"{spec.flag or spec.name} must not carry a password on the command line "
            f"(ps and shell history show it): set {spec.env} or {spec.env}_FILE"
        )


def _from_env(spec: Spec, env: Mapping[str, str], notes: list[str]) -> tuple[str | None, str]:
    """The value of `spec` from its variable or, for secrets, from the file ``<VAR>_FILE`` names."""
    value = env.get(spec.env)
    path = env.get(spec.env + "_FILE") if spec.secret else None
    if path and value is not None:
        raise ConfigError(f"set {spec.env} or {spec.env}_FILE, not both")
    if not path:
        return value, spec.env
    return _read_secret_file(spec.env + "_FILE", path, notes), spec.env + "_FILE"


def _read_secret_file(name: str, path: str, notes: list[str]) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not UTF-8 text") from None
    # Group-readable is normal for Kubernetes secret volumes (fsGroup); world is not.
    if mode & stat.S_IROTH:
        notes.append(f"{name}: {path} is readable by every user; chmod o-r it")
    return text.strip()


def _from_alias(spec: Spec, given: Mapping[str, Any], notes: list[str]) -> tuple[Any, str]:
    """A deprecated name's value (flags or env) in the new unit, with a note; or (None, "").

    `given` is either the flags (keyed by setting name) or the environment.
    """
    alias = ALIASES.get(spec.name)
    if alias is None:
        return None, ""
    where = alias.env if alias.env in given else alias.flag
    raw = given.get(alias.env, given.get(alias.old))
    if raw is None or raw == "":
        return None, ""
    notes.append(f"{where} is deprecated ({alias.note})")
    return alias.to_new(Spec(alias.old, "", alias.type).convert(raw, where)), where
