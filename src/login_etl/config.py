"""Settings: one frozen object, read once, validated at start.

Every setting has an environment variable ``LOGIN_ETL_*`` and a CLI flag; the
flag wins. libpq's own ``PG*`` variables apply when no database URL is given,
and AWS settings come from boto3's standard chain (``AWS_ENDPOINT_URL``,
``AWS_REGION``, credentials). Secrets never appear in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from login_etl.errors import ConfigError
from login_etl.masking import Masker, decode_key
from login_etl.pipeline import Options


@dataclass(frozen=True)
class Spec:
    """How one setting is named, defaulted, parsed and described."""

    name: str
    help: str
    default: str | None = None
    parse: Callable[[str, str], Any] = lambda text, flag: text
    secret: bool = False

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return "LOGIN_ETL_" + self.name.upper()

    @property
    def flag(self) -> str:
        """The CLI flag that sets it."""
        return "--" + self.name.replace("_", "-")


def _int(low: int, high: int) -> Callable[[str, str], int]:
    def parse(text: str, flag: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ConfigError(f"{flag} must be a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{flag} must be between {low} and {high}, got {value}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(text: str, flag: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ConfigError(f"{flag} must be one of {', '.join(options)}, got {text!r}")
        return value

    return parse


def _bool(text: str, flag: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{flag} must be true or false, got {text!r}")


SPECS = {
    s.name: s
    for s in [
        Spec("queue_url", "SQS queue URL to consume from."),
        Spec(
            "database_url",
            "PostgreSQL URI (libpq); when empty, libpq's PG* variables apply.",
            default="",
            secret=True,
        ),
        Spec("masking_key", "Base64 512-bit AES-SIV key (login-etl keygen).", secret=True),
        Spec(
            "masking_old_keys",
            "Comma-separated older keys, accepted for unmasking only.",
            default="",
            secret=True,
        ),
        Spec("concurrency", "Receiver threads.", "4", _int(1, 64)),
        Spec("batch_size", "Messages per database transaction.", "500", _int(1, 10_000)),
        Spec("batch_wait", "Longest wait to fill a batch, in ms.", "1000", _int(1, 600_000)),
        Spec("wait_time", "SQS long-poll wait, in seconds.", "20", _int(0, 20)),
        Spec("max_in_flight", "Most messages held at once.", "2000", _int(10, 100_000)),
        Spec(
            "max_retry_time",
            "Seconds an outage may last before the worker gives up.",
            "300",
            _int(1, 86_400),
        ),
        Spec("shutdown_timeout", "Seconds to finish in-hand work on SIGTERM.", "30", _int(1, 3600)),
        Spec(
            "metrics_port", "Serve Prometheus metrics on this port (0: off).", "0", _int(0, 65535)
        ),
        Spec("init_db", "Create missing tables before running.", "true", _bool),
        Spec("log_format", "Log format: text or json.", "text", _choice("text", "json")),
        Spec(
            "log_level",
            "Log level.",
            "INFO",
            lambda t, f: _choice("debug", "info", "warning", "error")(t, f).upper(),
        ),
    ]
}


@dataclass(frozen=True)
class Settings:
    """All settings, parsed and validated. Secrets are hidden from repr."""

    queue_url: str | None = None
    database_url: str = field(default="", repr=False)
    masking_key: str | None = field(default=None, repr=False)
    masking_old_keys: str = field(default="", repr=False)
    concurrency: int = 4
    batch_size: int = 500
    batch_wait: int = 1000
    wait_time: int = 20
    max_in_flight: int = 2000
    max_retry_time: int = 300
    shutdown_timeout: int = 30
    metrics_port: int = 0
    init_db: bool = True
    log_format: str = "text"
    log_level: str = "INFO"

    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Read settings: a flag (not None) wins over the env variable, then the default."""
        flags = flags or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            spec = SPECS[f.name]
            raw = flags.get(f.name)
            if raw is None:
                raw = env.get(spec.env)
            if raw is None or (raw == "" and not spec.secret and spec.default is not None):
                raw = spec.default
            if raw is None:
                continue
            values[f.name] = (
                spec.parse(raw, f"{spec.flag} / {spec.env}") if isinstance(raw, str) else raw
            )
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Cross-setting checks."""
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
        """The masker built from the configured keys, or a ConfigError."""
        if not self.masking_key:
            raise ConfigError(
                "no masking key: set LOGIN_ETL_MASKING_KEY (make one with `login-etl keygen`)"
            )
        primary = decode_key(self.masking_key)
        old = [
            decode_key(k, name=f"LOGIN_ETL_MASKING_OLD_KEYS[{i}]")
            for i, k in enumerate(self.masking_old_keys.split(","))
            if k.strip()
        ]
        return Masker(primary, old)

    def options(self, *, drain: bool = False, max_messages: int | None = None) -> Options:
        """Pipeline options from these settings."""
        return Options(
            concurrency=self.concurrency,
            batch_size=self.batch_size,
            batch_wait=self.batch_wait / 1000,
            wait_seconds=self.wait_time,
            max_in_flight=self.max_in_flight,
            drain=drain,
            max_messages=max_messages,
            max_retry_time=float(self.max_retry_time),
            shutdown_timeout=float(self.shutdown_timeout),
        )
