"""Fixtures for the sink tests: a real Mosquitto per test, subscribers in child processes."""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from factoryedge.runtimes.sinks.payloads import Identity, Topics
from tests.support.broker import Mosquitto, Subscriber, require_binary

IDENTITY = Identity(site="plant1", line="press3", machine="m7", device_id="edge-test")
TOPICS = Topics.for_identity(IDENTITY)
PUBLISHER = Path(__file__).with_name("_publisher.py")


@pytest.fixture(scope="session")
def mosquitto_binary() -> str:
    return require_binary("mosquitto")


@pytest.fixture
def broker(tmp_path, mosquitto_binary):
    """A persistent broker (sessions survive a restart, as on a plant's broker)."""
    b = Mosquitto(tmp_path / "broker", persistence=True, binary=mosquitto_binary).start()
    yield b
    b.stop()


@pytest.fixture
def subscribe(tmp_path, broker):
    """``subscribe(topics, **kw)`` starts a child-process subscriber, stopped after the test."""
    started: list[Subscriber] = []

    def start(topics, **kw) -> Subscriber:
        sub = Subscriber(broker, list(topics), tmp_path, **kw).start()
        started.append(sub)
        return sub

    yield start
    for sub in started:
        sub.stop()


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
