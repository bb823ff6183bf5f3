"""A bad network between the device and the broker: lost PUBACKs, cut links, a half-open stall.

The device's MqttSink reaches a real Mosquitto through ``tests.support.proxy.FaultyProxy``;
the plant's subscriber is a child process connected to the broker directly, recording every
copy it receives. Deliveries are counted by event_id: a lost PUBACK may cost one duplicate per
affected event per connection loss (at-least-once), never a loss and never more copies.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from urllib.parse import urlencode

import pytest

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.faults.report import report
from tests.support import monitoring as e2e
from tests.support.broker import wait_until
from tests.support.proxy import FaultyProxy

IDENTITY = msg.Identity(site="plant1", line="press3", machine="m7", device_id="edge-net")
TOPICS = msg.Topics.for_identity(IDENTITY)


@pytest.fixture
def proxy(broker):
    with FaultyProxy(broker.host, broker.port) as p:
        yield p


def _sink(proxy: FaultyProxy, tmp_path, **options) -> MqttSink:
    opts = {"site": IDENTITY.site, "line": IDENTITY.line, "machine": IDENTITY.machine,
            "device_id": IDENTITY.device_id, "outbox": str(tmp_path / "outbox.sqlite"),
            "reconnect_min": "0.05", "reconnect_max": "0.5", **options}
    return MqttSink.from_uri(f"{proxy.url}?{urlencode(opts)}")


def _publish(sink: MqttSink, count: int, first: int) -> list[str]:
    ids = []
    for seq in range(first, first + count):
        now = time.time()
        event = msg.anomaly_payload(IDENTITY, severity="alarm", score=5.0, threshold=1.0, window_start=now - 1,
                                    window_end=now, model_name="test", model_version="1", details={"seq": seq})
        sink.publish_anomaly(event)
        ids.append(event.event_id)
    return ids


def _copies(sub) -> Counter:
    return Counter(m.json()["event_id"] for m in sub.messages(TOPICS.anomaly))


def _ids(messages) -> set[str]:
    return {m.json()["event_id"] for m in messages}


def _cut_after_a_silent_window(sink, proxy, sub, ids: list[str], dropped: int, what: str) -> None:
    """Wait until the proxy has swallowed ``dropped`` PUBACKs in all (a full window of ``ids``), cut, wait for ``ids``."""
    window = sink.config.max_inflight
    wait_until(lambda: proxy.stats()["pubacks_dropped"] >= dropped, 30,
               f"{what}: the broker to acknowledge a full window that the device never hears of")
    sub.wait_for(lambda m: len(set(ids) & _ids(m)) >= window, 30, f"{what}: the subscriber to get the window",
                 topic=TOPICS.anomaly)
    assert sink.stats().outbox_depth == len(ids)  # nothing is marked delivered without its PUBACK
    proxy.set_mode("forward")
    proxy.cut()
    sub.wait_for(lambda m: set(ids) <= _ids(m), 30, f"{what}: every event", topic=TOPICS.anomaly)
    assert sink.flush(30), f"{what}: the outbox did not drain after the reconnect"


def _report(name: str, produced: list[str], copies: Counter, proxy: FaultyProxy) -> int:
    return report(name, produced, list(copies.elements()), f"paho's own DUP re-sends {proxy.stats()['dup_publishes']}")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_lost_pubacks_then_a_cut_cost_at_most_one_duplicate_per_event(broker, subscribe, proxy, tmp_path, protocol):
    """Three times: the broker's PUBACKs are swallowed while a window of events goes out, then the link is cut.

    Each event of the window reached the broker once already; after the reconnect exactly one
    path (the outbox) sends it again, so it arrives twice, never three times.
    """
    window, rounds, per_round = 10, 3, 15
    sub = subscribe([TOPICS.anomaly])
    sink = _sink(proxy, tmp_path, max_inflight=str(window), protocol=protocol)
    try:
        assert sink.wait_connected(20)
        produced = _publish(sink, 1, 0)
        assert sink.flush(20)  # the "online" status is acknowledged too: the window is all events from here
        for r in range(rounds):
            proxy.set_mode("drop_puback")
            ids = _publish(sink, per_round, len(produced))
            produced += ids
            _cut_after_a_silent_window(sink, proxy, sub, ids, window * (r + 1), f"round {r}")
        copies = _copies(sub)
        duplicated = _report(f"lost PUBACKs + cut x3 (MQTT {protocol})", produced, copies, proxy)
        assert set(copies) == set(produced)  # nothing lost, nothing foreign
        assert proxy.stats()["dup_publishes"] == 0  # the outbox is the one re-send path
        assert max(copies.values()) <= 2, f"an event arrived {max(copies.values())} times: {copies.most_common(3)}"
        # only the events whose PUBACK was swallowed may come twice
        assert duplicated <= proxy.stats()["pubacks_dropped"] and duplicated <= window * rounds
        assert sink.stats().reconnects >= rounds
    finally:
        sink.close(timeout=5)


def test_a_stalled_link_is_noticed_by_keepalive_and_nothing_is_lost(broker, subscribe, proxy, tmp_path, caplog):
    """A half-open link (nothing forwarded, nothing closed): keepalive notices, the sink reconnects, all arrive."""
    keepalive = 5  # the smallest the sink accepts; paho gives up after about two of them without a byte
    sub = subscribe([TOPICS.anomaly])
    caplog.set_level(logging.WARNING, logger="factoryedge.runtimes.sinks.mqtt")
    sink = _sink(proxy, tmp_path, keepalive=str(keepalive))
    try:
        assert sink.wait_connected(20)
        produced = _publish(sink, 5, 0)
        assert sink.flush(20)
        proxy.set_mode("stall")
        stalled = time.monotonic()
        during = _publish(sink, 20, len(produced))  # stored at once; some go into the stalled socket
        produced += during
        wait_until(lambda: not sink.stats().connected, 10 * keepalive, "the sink to notice the stalled link")
        noticed = time.monotonic() - stalled
        assert any("Keep alive timeout" in r.getMessage() for r in caplog.records), \
            "the sink lost the link, but not by its keepalive: " + "; ".join(r.getMessage() for r in caplog.records)
        assert sink.stats().outbox_depth == 20  # nothing of the stall marked delivered
        proxy.set_mode("forward")
        sub.wait_for(lambda m: set(produced) <= set(_copies(sub)), 60, "every event after the stall",
                     topic=TOPICS.anomaly)
        assert sink.flush(30)
        assert sink.stats().reconnects >= 1
        copies = _copies(sub)
        duplicated = _report(f"half-open stall (keepalive {keepalive} s, noticed after {noticed:.1f} s)",
                             produced, copies, proxy)
        assert set(copies) == set(produced)
        assert proxy.stats()["dup_publishes"] == 0
        # a stalled connection's bytes may still reach the broker when the path returns, and the
        # outbox sends the same rows on the new one: one duplicate per event per connection lost
        reconnects = sink.stats().reconnects
        assert max(copies.values()) <= 1 + reconnects, copies.most_common(3)
        assert duplicated <= len(during) * reconnects
    finally:
        sink.close(timeout=5)


@pytest.mark.slow  # the session's sim_bundle trains a model (about 40 s of CPU) unless another test did already
def test_a_monitoring_device_through_lost_pubacks_and_a_cut(tmp_path, broker, subscribe, proxy, sim_bundle):
    """The real device program (replayed vibration, the bundle's model, the debounce, the sink) on the faulty link.

    Events come as the machine produces them, not in test-made batches: PUBACKs are swallowed
    while anomalies are raised and cleared, the link is cut, the replay runs to its end and
    the program closes its sink. Every event the outbox stored arrives, none more than twice.
    """
    sub = subscribe([e2e.ANOMALIES])
    replay = e2e.alternating_recording(tmp_path, cycles=10)
    profile = load_profile(e2e.write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", proxy,
                                         clear_windows=5))
    monitor = ConditionMonitor(profile)
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: e2e.anomaly_events(sub), 30, "a first anomaly event")
        proxy.set_mode("drop_puback")
        wait_until(lambda: proxy.stats()["pubacks_dropped"] >= 2, 30, "two events acknowledged into the void")
        proxy.set_mode("forward")
        proxy.cut()
    finally:
        runner.join(timeout=90)  # the replay ends; run() closes the sink and flushes the outbox
        if runner.is_alive():
            monitor.stop()
            runner.join(timeout=20)
    assert not runner.is_alive()
    stored = e2e.outbox_event_ids(tmp_path / "outbox.sqlite")
    wait_until(lambda: {e["event_id"] for e in e2e.anomaly_events(sub)} >= set(stored), 30, "every stored event")
    copies = Counter(e["event_id"] for e in e2e.anomaly_events(sub))
    _report("device program, lost PUBACKs + cut", stored, copies, proxy)
    assert len(stored) == len(set(stored)) == monitor.counters.events
    assert set(copies) == set(stored)
    assert max(copies.values()) <= 2, copies.most_common(3)
    assert proxy.stats()["dup_publishes"] == 0
