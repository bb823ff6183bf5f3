"""Fixtures for the sink tests (the broker and subscriber fixtures live in tests/conftest.py)."""
from __future__ import annotations

from tests.support.sink import IDENTITY, TOPICS  # noqa: F401 - imported from here by the sink tests
