"""The demo's local broker, both kinds, with the real sink and a subscriber in another process."""
import queue
import subprocess
import sys
import threading
import time
import uuid

import pytest

from factoryedge.runtimes.devkit.local_broker import LocalBroker
from factoryedge.runtimes.messages import anomaly_payload
from factoryedge.runtimes.sinks.mqtt import MqttSink


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_local_broker_carries_an_anomaly_to_a_watcher(kind, tmp_path, mosquitto_binary):
    if kind == "amqtt":
        pytest.importorskip("amqtt")
    broker = LocalBroker(kind).start()
    watcher = subprocess.Popen([sys.executable, "-m", "factoryedge", "watch", broker.uri, "--protocol", "3.1.1"],
                               stdout=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in watcher.stdout], daemon=True).start()
    sink = None
    try:
        assert lines.get(timeout=15).startswith("subscribed")
        # A client id of its own: a sink some earlier test left reconnecting to a port this
        # broker now reuses would otherwise take the session over, again and again.
        sink = MqttSink.from_uri(broker.uri, site="s", line="l", machine="m", device_id=f"d{uuid.uuid4().hex[:8]}",
                                 outbox=str(tmp_path / "o.sqlite"), protocol=broker.protocol)
        assert sink.wait_connected(10)
        p = anomaly_payload(sink.identity, severity="alarm", score=3.0, threshold=1.0, window_start=time.time() - 1,
                            window_end=time.time(), model_name="t", model_version="1")
        sink.publish_anomaly(p)
        assert sink.flush(10)
        got = [lines.get(timeout=10) for _ in range(2)]
        assert any(line.startswith("ANOMALY raised") and p.event_id[:8] in line for line in got), got
    finally:
        if sink is not None:
            sink.close(5)
        watcher.terminate()
        watcher.wait(5)
        broker.stop()
    assert kind in broker.kind


def test_mosquitto_options_reach_the_broker_config(mosquitto_binary):
    broker = LocalBroker("mosquitto", {"max_queued_messages": 0}).start()
    try:
        conf = (broker._dir / "mosquitto.conf").read_text()
        assert "max_queued_messages 0\n" in conf
        assert broker._proc.poll() is None  # mosquitto accepted the option and listens
    finally:
        broker.stop()
