"""login-etl: SQS login events → validated, PII-masked PostgreSQL rows, exactly once in effect."""

from __future__ import annotations

__version__ = "0.1.0"
