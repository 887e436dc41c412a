"""Integration tests: real PostgreSQL and SQS (moto over HTTP)."""

import pytest

# The shared checks in helpers.py fail with pytest's detailed messages too.
pytest.register_assert_rewrite("tests.integration.helpers")
