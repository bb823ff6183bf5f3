"""Fixtures shared across the suite: a real Mosquitto per test, child-process subscribers,
and one vibration bundle trained on simulated data per session."""
from __future__ import annotations

import pytest

from tests.support.broker import Mosquitto, Subscriber, require_binary


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
    from tests.support.sink import sink_uri

    return lambda **options: sink_uri(broker, tmp_path / "outbox.sqlite", **options)


@pytest.fixture
def publisher_cmd():
    """The argv prefix running ``tests/runtimes/sinks/_publisher.py`` in a fresh interpreter."""
    import sys

    from tests.support.sink import PUBLISHER

    return [sys.executable, str(PUBLISHER)]


@pytest.fixture(scope="session")
def sim_bundle(tmp_path_factory, pytestconfig):
    """A dense-autoencoder bundle trained on 30 s of a simulated healthy bearing at 12 kHz.

    Trained once per state of the sdk/exporter code and kept in pytest's cache (unless the
    cache plugin is off), since training dominates the start of every session that needs it.
    """
    from tests.support.sim_model import cached_sim_bundle, train_sim_bundle

    out = tmp_path_factory.mktemp("sim_bundle")
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:
        return train_sim_bundle(out)
    return cached_sim_bundle(cache.mkdir("factoryedge"), out)
