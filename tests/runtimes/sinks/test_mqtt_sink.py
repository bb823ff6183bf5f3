"""MqttSink against a real Mosquitto: events, status, telemetry, commands, credentials.

The sink runs in the test process; every subscriber runs in a child process (DESIGN.md trap).
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from factoryedge.errors import ConfigError, SinkError
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.sinks.mqtt import MqttSink
from factoryedge.runtimes.sinks.outbox import Outbox
from tests.support.broker import Mosquitto, require_binary, wait_until

from .conftest import IDENTITY, TOPICS


def anomaly(seq: int) -> msg.AnomalyPayload:
    now = time.time()
    return msg.anomaly_payload(IDENTITY, severity="warning", score=1.5, threshold=1.0, window_start=now - 1,
                              window_end=now, model_name="test", model_version="1", details={"seq": seq})


@pytest.fixture
def open_sink(sink_uri):
    opened: list[MqttSink] = []

    def make(**options) -> MqttSink:
        sink = MqttSink.from_uri(sink_uri(**options))
        opened.append(sink)
        return sink

    yield make
    for sink in opened:
        sink.close(timeout=2)


def test_events_arrive_at_a_separate_process_with_the_documented_schema(subscribe, open_sink):
    sub = subscribe([TOPICS.anomaly])
    sink = open_sink()
    sent = [anomaly(i) for i in range(20)]
    rows = [sink.publish_anomaly(e) for e in sent]
    assert rows == sorted(rows)
    got = sub.wait_for(lambda m: len(m) >= 20, 10, "20 anomaly events")
    assert all(m.qos == 1 and not m.retain for m in got)
    parsed = [msg.parse_payload(m.payload) for m in got]
    assert all(isinstance(p, msg.AnomalyPayload) for p in parsed)
    assert [p.event_id for p in parsed] == [e.event_id for e in sent]  # in order, on one connection
    assert json.loads(got[0].payload)["schema"] == "factoryedge.anomaly/1"
    assert sink.flush(5)
    s = sink.stats()
    assert (s.events_put, s.acked, s.outbox_depth, s.connected) == (20, 20, 0, True)


def test_status_is_retained_online_and_a_clean_close_sets_offline(subscribe, open_sink, sink_uri):
    sink = open_sink()
    assert sink.wait_connected(5)
    late = subscribe([TOPICS.status], clean=True)  # subscribes after the fact: sees the retained one
    first = late.wait_for(lambda m: m, 5, "the retained status")[0]
    assert first.retain and first.json()["state"] == "online" and first.json()["reason"] == "connected"
    assert sink.close(timeout=5)
    last = late.wait_for(lambda m: len(m) >= 2, 5, "the offline status")[-1].json()
    assert (last["schema"], last["state"], last["reason"]) == ("factoryedge.status/1", "offline", "shutdown")
    after = subscribe([TOPICS.status], clean=True)
    retained = after.wait_for(lambda m: m, 5, "the retained offline status")[0]
    assert retained.retain and retained.json()["state"] == "offline"
    with pytest.raises(SinkError, match="closed"):
        sink.publish_event(TOPICS.anomaly, anomaly(0))


def test_telemetry_is_qos0_and_not_persisted(subscribe, open_sink, broker):
    sub = subscribe([TOPICS.telemetry, TOPICS.health])
    sink = open_sink()
    assert sink.wait_connected(5)
    t = msg.telemetry_payload(IDENTITY, [0.5, 0.7], threshold=1.0, period_start=0.0, period_end=10.0,
                             model_name="test", model_version="1")
    assert sink.publish_telemetry(TOPICS.telemetry, t)
    assert sink.publish_telemetry(TOPICS.health, msg.health_payload(IDENTITY, uptime_s=1.0))
    got = sub.wait_for(lambda m: len(m) >= 2, 5, "telemetry and health")
    assert {m.topic for m in got} == {TOPICS.telemetry, TOPICS.health} and {m.qos for m in got} == {0}
    assert sink.outbox.depth() == 0 and sink.stats().events_put == 0
    broker.stop()
    wait_until(lambda: not sink.stats().connected, 5, "the sink to notice the broker is gone")
    assert not sink.publish_telemetry(TOPICS.telemetry, t)
    assert sink.stats().telemetry_dropped == 1 and sink.outbox.depth() == 0


def test_leftovers_of_an_earlier_process_are_sent_on_start(subscribe, sink_uri, tmp_path, open_sink):
    events = [anomaly(i) for i in range(5)]
    with Outbox(tmp_path / "outbox.sqlite") as box:  # the file a crashed process left behind
        for e in events:
            box.put(TOPICS.anomaly, e.to_bytes())
    sub = subscribe([TOPICS.anomaly])
    sink = open_sink()
    got = sub.wait_for(lambda m: len(m) >= 5, 10, "the 5 left-over events")
    assert [m.json()["event_id"] for m in got] == [e.event_id for e in events]
    assert sink.flush(5) and sink.outbox.depth() == 0


def test_invalid_topics_and_payloads_are_config_errors(open_sink):
    sink = open_sink()
    for topic in ("", "a/+/b", "a/#"):
        with pytest.raises(ConfigError, match="not a topic one can publish to"):
            sink.publish_event(topic, b"x")
    with pytest.raises(ConfigError, match="cannot publish a float"):
        sink.publish_event(TOPICS.anomaly, 1.5)
    with pytest.raises(ConfigError, match="cannot publish a int"):
        sink.publish_event(TOPICS.anomaly, 7)
    with pytest.raises(ConfigError, match="as JSON"):
        sink.publish_event(TOPICS.anomaly, {"score": float("nan")})
    assert sink.outbox.depth() == 0


def _send_command(broker: Mosquitto, payload: str, *extra: str) -> None:
    """Publish from a separate process, as a plant's client would."""
    pub = require_binary("mosquitto_pub")
    subprocess.run([pub, "-h", broker.host, "-p", str(broker.port), "-q", "1", "-t", TOPICS.command,
                    "-m", payload, *extra], check=True, timeout=10)


def _probe(broker: Mosquitto, sub, payload: str, *extra: str, timeout: float = 10.0):
    """Send a command until its first answer arrives: the sink subscribes asynchronously on
    connect, so an early command may find no subscription. Re-sends are harmless because a
    repeated request_id is answered from memory, not run again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _send_command(broker, payload, *extra)
        answered = time.monotonic() + 0.5
        while time.monotonic() < answered:
            if sub.messages():
                return sub.messages()
            time.sleep(0.02)
    pytest.fail(f"no answer to {payload} within {timeout} s", pytrace=False)


def test_commands_are_run_and_answered(subscribe, open_sink, broker):
    calls: list[msg.Command] = []

    def on_command(cmd: msg.Command):
        calls.append(cmd)
        if cmd.command == "set_threshold":
            return {"threshold": cmd.args["threshold"]}
        if cmd.command == "recalibrate":
            return msg.CommandReply(status="accepted", message="collecting 60 s of normal running")
        raise ConfigError("no bundle at '/nope'")

    sub = subscribe([TOPICS.command_response])
    sink = open_sink()
    sink.subscribe_commands(on_command)
    assert sink.wait_connected(5)
    _probe(broker, sub, '{"command": "set_threshold", "args": {"threshold": 4.2}, "request_id": "r-1"}')
    _send_command(broker, '{"command": "recalibrate", "args": {"duration_s": 60}, "request_id": "r-2"}')
    _send_command(broker, '{"command": "reload", "args": {"bundle": "/nope"}, "request_id": "r-3"}')
    _send_command(broker, '{"command": "explode", "request_id": "r-4"}')
    _send_command(broker, "not json")
    got = sub.wait_for(lambda m: {"r-2", "r-3", "r-4"} <= {x.json()["request_id"] for x in m}
                       and any(x.json()["request_id"] is None for x in m), 10, "the command responses")
    answers = {m.json()["request_id"]: m.json() for m in got}
    assert answers["r-1"]["status"] == "ok" and answers["r-1"]["result"] == {"threshold": 4.2}
    assert answers["r-2"]["status"] == "accepted"
    assert answers["r-3"]["status"] == "error" and "/nope" in answers["r-3"]["message"]
    assert answers["r-4"]["status"] == "rejected" and "valid commands" in answers["r-4"]["message"]
    assert answers[None]["status"] == "rejected" and "not valid UTF-8 JSON" in answers[None]["message"]
    assert all(a["schema"] == "factoryedge.command_response/1" for a in answers.values())
    n_calls = len(calls)
    # a re-delivered command (same request_id) is answered again but not run again
    _send_command(broker, '{"command": "recalibrate", "args": {"duration_s": 60}, "request_id": "r-2"}')
    sub.wait_for(lambda m: sum(x.json()["request_id"] == "r-2" for x in m) >= 2, 10, "the repeated answer")
    assert len(calls) == n_calls
    assert [c.command for c in calls].count("set_threshold") == 1  # probes were de-duplicated too


def test_mqtt5_response_topic_and_correlation_data_are_honoured(subscribe, open_sink, broker):
    sub = subscribe(["plant/requests/42"])
    sink = open_sink()
    sink.subscribe_commands(lambda cmd: {"ok": True})
    assert sink.wait_connected(5)
    reply = '{"command": "reload", "request_id": "q-1"}'
    v5 = ("-V", "mqttv5", "-D", "publish", "response-topic", "plant/requests/42",
          "-D", "publish", "correlation-data", "abc")
    answer = _probe(broker, sub, reply, *v5)[0].json()
    assert answer["request_id"] == "q-1" and answer["status"] == "ok" and answer["result"] == {"ok": True}


def test_username_and_password_from_the_environment(tmp_path, monkeypatch, mosquitto_binary):
    passwd = require_binary("mosquitto_passwd")
    pwfile = tmp_path / "passwd"
    subprocess.run([passwd, "-c", "-b", str(pwfile), "edge7", "right-pw"], check=True, timeout=10)
    with Mosquitto(tmp_path / "auth-broker", password_file=pwfile, binary=mosquitto_binary) as b:
        base = (f"{b.url}?site=a&line=b&machine=c&outbox={tmp_path}/{{}}.sqlite&username=edge7"
                "&password_env=FE_TEST_PW&reconnect_min=0.05&reconnect_max=0.2")
        monkeypatch.setenv("FE_TEST_PW", "right-pw")
        good = MqttSink.from_uri(base.format("good"))
        try:
            assert good.wait_connected(5)
        finally:
            good.close(2)
        monkeypatch.setenv("FE_TEST_PW", "wrong-pw")
        bad = MqttSink.from_uri(base.format("bad"))
        try:
            wait_until(lambda: bad.stats().connect_failures >= 1, 5, "the broker to refuse the wrong password")
            assert not bad.stats().connected
        finally:
            bad.close(1)


def test_handed_over_events_are_committed_in_order_and_flush_waits_for_them(subscribe, open_sink):
    """wait=False: a burst from one thread shares fsyncs, keeps call order, and flush covers it."""
    sub = subscribe([TOPICS.anomaly])
    sink = open_sink()
    sent = [anomaly(i) for i in range(300)]
    receipts = []
    for i, e in enumerate(sent):  # mixed with synchronous calls: one order all the same
        r = sink.publish_anomaly(e, wait=i % 50 != 0)
        receipts.append(r if not isinstance(r, int) else None)
    assert sink.flush(30)
    rows = [r.result(0) for r in receipts if r is not None]
    assert all(r.done() for r in receipts if r is not None) and rows == sorted(rows)
    got = sub.wait_for(lambda m: len(m) >= len(sent), 15, "every handed-over event")
    assert [msg.parse_payload(m.payload).event_id for m in got] == [e.event_id for e in sent]
    s = sink.stats()
    assert (s.events_put, s.acked, s.outbox_depth, s.store_failed) == (300, 300, 0, 0)


def test_an_event_the_outbox_refuses_fails_alone_and_says_why(subscribe, open_sink, tmp_path):
    sub = subscribe([TOPICS.anomaly])
    sink = open_sink()
    assert sink.wait_connected(20)  # an unstored event goes out directly only while connected
    with sink.outbox._lock:  # a real SQLite error on the real write path, for one topic only
        sink.outbox._db.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON outbox WHEN NEW.topic LIKE '%/refuse' "
                                "BEGIN SELECT RAISE(ABORT, 'simulated disk error'); END")
    good = [anomaly(i) for i in range(3)]
    receipts = [sink.publish_anomaly(good[0], wait=False),
                sink.publish_event(TOPICS.base + "/refuse", b"x", wait=False),
                sink.publish_anomaly(good[1], wait=False)]
    # not stored, but the sink is connected: it went out directly (at most once), so no error
    assert receipts[1].result(10) is None
    assert sink.publish_event(TOPICS.base + "/refuse", b"y") is None
    receipts.append(sink.publish_anomaly(good[2], wait=False))
    assert sink.flush(10)
    assert [r.result(0) for r in (receipts[0], receipts[2], receipts[3])] == sorted(
        r.result(0) for r in (receipts[0], receipts[2], receipts[3]))
    got = sub.wait_for(lambda m: len(m) >= 3, 10, "the three stored events")
    assert [msg.parse_payload(m.payload).event_id for m in got] == [e.event_id for e in good]
    assert sink.stats().store_failed == 2 and sink.stats().unstored_sent == 2
