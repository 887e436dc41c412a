"""Logging setup: one line per event, as text or JSON.

Call sites pass structured fields with ``extra={"fields": {...}}``; they must
never contain a message body, a PII value or a key.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from login_etl import redact


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's structured fields, text values already scrubbed of secrets.

    Scrubbed before any quoting or JSON escaping, which would otherwise hide
    a secret holding a quote, a backslash or non-ASCII from the scrubber.
    """
    fields = getattr(record, "fields", None)
    if not isinstance(fields, dict):
        return {}
    plain = (int, float, bool, type(None))
    return {k: v if isinstance(v, plain) else redact.scrub(str(v)) for k, v in fields.items()}


def _text_value(value: object) -> str:
    """A field's value for a text line: bare when it is one plain word, else JSON-quoted.

    Quoting keeps free text (an ``--actor`` or ``--purpose``, a reason) from
    passing itself off as more ``key=value`` fields or another line.
    """
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return json.dumps(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as JSON."""
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact.scrub(record.getMessage()),
        }
        doc.update(_fields(record))
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = record.exc_info[0].__name__
        return redact.scrub(json.dumps(doc, default=str))


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as one text line."""
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        fields = _fields(record)
        if record.exc_info and record.exc_info[0] is not None:
            fields["error"] = record.exc_info[0].__name__  # the type, never a traceback
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        # One event, one line: a multi-line message (a Python warning) is escaped.
        message = redact.scrub(record.getMessage()).rstrip().replace("\n", "\\n")
        line = f"{ts} {record.levelname:<7} {record.name}: {message}"
        return redact.scrub(f"{line} {extra}" if extra else line)


def configure(fmt: str = "text", level: str = "INFO", *, stream: TextIO | None = None) -> None:
    """Send every log line to stderr (or `stream`) in `fmt` ("text" or "json"), third-party
    ones included.

    The handler sits on the root logger, so warnings from botocore, psycopg,
    urllib3 or Python's `warnings` come out in the same format (and scrubbed
    of secrets) as ours. Other libraries log at WARNING and above only:
    boto's debug logs can print message bodies.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    ours = logging.getLogger("login_etl")
    ours.handlers[:] = []
    ours.setLevel(level.upper())
    ours.propagate = True
    logging.captureWarnings(True)
