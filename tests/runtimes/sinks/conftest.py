"""Fixtures for the sink tests (the broker and subscriber fixtures live in tests/conftest.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from factoryedge.runtimes.messages import Identity, Topics

IDENTITY = Identity(site="plant1", line="press3", machine="m7", device_id="edge-test")
TOPICS = Topics.for_identity(IDENTITY)
PUBLISHER = Path(__file__).with_name("_publisher.py")


@pytest.fixture
def sink_uri(tmp_path, broker):
    """``sink_uri(**options)``: the URI of a sink on this broker with a per-test outbox file."""

    def make(**options) -> str:
        opts = {"site": IDENTITY.site, "line": IDENTITY.line, "machine": IDENTITY.machine,
                "device_id": IDENTITY.device_id, "outbox": str(tmp_path / "outbox.sqlite"),
                "reconnect_min": "0.05", "reconnect_max": "0.5", **options}
        return f"{broker.url}?{urlencode(opts)}"

    return make


@pytest.fixture
def publisher_cmd():
    """The argv prefix running ``_publisher.py`` in a fresh interpreter."""
    return [sys.executable, str(PUBLISHER)]
