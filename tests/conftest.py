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
