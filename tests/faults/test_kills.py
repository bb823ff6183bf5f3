"""Kills and outages: the broker stopped mid-run, the device process SIGKILLed and restarted,
a publisher killed mid-burst. Nothing stored is lost; duplicates on the wire are allowed
(at-least-once) and counted by event_id.

The device-level scenarios run the real condition monitor on a replayed recording that
raises and clears anomalies; the sink-level ones run ``tests/runtimes/sinks/_publisher.py``
in a child process so it can be killed.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.runtimes.sinks.mqtt import MqttSink
from factoryedge.runtimes.sinks.outbox import Outbox
from tests.faults.report import report
from tests.support.broker import wait_until
from tests.support.monitoring import ANOMALIES, alternating_recording, anomaly_events, outbox_event_ids, write_profile
from tests.support.sink import IDENTITY, TOPICS


def _lines(path: Path) -> list[str]:
    """Complete lines a child process has printed so far."""
    text = path.read_text() if path.exists() else ""
    return text[: text.rfind("\n") + 1].splitlines()


def _spawn(cmd: list[str], out: Path) -> subprocess.Popen:
    with open(out, "w") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()


def _event_ids(messages) -> list[str]:
    return [m.json()["event_id"] for m in messages]


# -- the device program ------------------------------------------------------------------


def test_broker_outage_mid_run_loses_no_event(tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe([ANOMALIES])
    replay = alternating_recording(tmp_path)
    profile = load_profile(write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker,
                                         clear_windows=5))
    monitor = ConditionMonitor(profile)
    runner = threading.Thread(target=monitor.run)
    runner.start()
    wait_until(lambda: anomaly_events(sub), 15, "a first anomaly event")
    broker.stop()
    produced_before = monitor.counters.events
    wait_until(lambda: monitor.counters.events >= produced_before + 2, 15, "events while the broker is down")
    during_outage = monitor.counters.events - produced_before
    broker.restart()
    runner.join(timeout=60)  # the replay ends; run() closes the sink and flushes the outbox
    assert not runner.is_alive()
    stored = outbox_event_ids(tmp_path / "outbox.sqlite")
    wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= set(stored), 15, "every stored event")
    received = [e["event_id"] for e in anomaly_events(sub)]
    report("broker outage mid-run", stored, received, f"{during_outage} made during the outage")
    assert during_outage >= 2
    assert len(stored) == len(set(stored)) == monitor.counters.events
    assert set(received) == set(stored)


def test_device_killed_and_restarted_delivers_every_event(tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe([ANOMALIES])
    replay = alternating_recording(tmp_path, cycles=10)
    path = write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker, clear_windows=5)
    outbox = tmp_path / "outbox.sqlite"
    cmd = [sys.executable, "-m", "factoryedge", "run", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: anomaly_events(sub), 30, "a first anomaly from the device process")
        # With the broker gone, new events can only wait in the outbox when the process dies.
        broker.stop()
        wait_until(lambda: len(outbox_event_ids(outbox)) > len(anomaly_events(sub)) + 1, 20,
                   "undelivered events in the outbox")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    left_behind = set(outbox_event_ids(outbox)) - {e["event_id"] for e in anomaly_events(sub)}
    assert left_behind, "the test must kill the device with events still undelivered"
    broker.restart()
    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= left_behind, 30,
                   "the restarted device to deliver what the killed one left behind")
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err.decode(errors="replace")[-2000:]
    stored = outbox_event_ids(outbox)
    wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= set(stored), 15, "every stored event")
    received = [e["event_id"] for e in anomaly_events(sub)]
    report("device SIGKILLed and restarted", stored, received, f"{len(left_behind)} left in the outbox at the kill")
    # at-least-once on the wire; exactly once after de-duplication by event_id
    assert set(received) == set(stored) and len(set(stored)) == len(stored)
    assert len(received) >= len(stored)


# -- the sink alone ----------------------------------------------------------------------


def test_killed_publisher_leaves_a_retained_offline_status(subscribe, sink_uri, publisher_cmd, tmp_path):
    watcher = subscribe([TOPICS.status])
    out = tmp_path / "publisher.out"
    proc = _spawn([*publisher_cmd, sink_uri(), "online"], out)
    try:
        wait_until(lambda: proc.poll() is None and "online" in _lines(out), 20, "the publisher to connect")
        watcher.wait_for(lambda m: m and m[-1].json()["state"] == "online", 5, "the online status")
    finally:
        _kill(proc)
    last = watcher.wait_for(lambda m: m[-1].json()["state"] == "offline", 10, "the Last Will")[-1].json()
    offline = [m for m in watcher.messages() if m.json()["state"] == "offline"]
    report("publisher SIGKILLed: Last Will", 1, ["offline"] * len(offline), "the offline status")
    assert last["reason"] == "connection_lost" and last["schema"] == "factoryedge.status/1"
    assert last["machine"] == IDENTITY.machine
    late = subscribe([TOPICS.status], clean=True)
    retained = late.wait_for(lambda m: m, 5, "the retained status")[0]
    assert retained.retain and retained.json()["state"] == "offline"


def test_events_published_while_the_broker_is_down_all_arrive_after_it_returns(subscribe, sink_uri, broker):
    sub = subscribe([TOPICS.anomaly])
    sink = MqttSink.from_uri(sink_uri())
    try:
        def event(seq):
            now = time.time()
            return msg.anomaly_payload(IDENTITY, severity="alarm", score=5.0, threshold=1.0, window_start=now - 1,
                                       window_end=now, model_name="test", model_version="1", details={"seq": seq})

        before = [event(i) for i in range(5)]
        for e in before:
            sink.publish_anomaly(e)
        before = [e.event_id for e in before]
        sub.wait_for(lambda m: len(m) >= 5, 10, "the events sent before the outage")
        assert sink.flush(5)
        broker.stop()
        wait_until(lambda: not sink.stats().connected, 10, "the sink to see the broker go")
        during = []
        for i in range(50):
            e = event(5 + i)
            sink.publish_anomaly(e)
            during.append(e.event_id)
        assert sink.stats().outbox_depth == 50  # all kept, none sent
        broker.start()  # same port, same persistence: the subscriber's session is back
        got = sub.wait_for(lambda m: set(during) <= set(_event_ids(m)), 15, "the events of the outage")
        ids = _event_ids(got)
        report("sink, broker down for 50 events", before + during, ids)
        assert len(set(ids)) == 55 and set(ids) == set(before) | set(during)
        assert sink.flush(5)
        s = sink.stats()
        assert s.reconnects >= 1 and s.acked >= 55 and s.outbox_depth == 0
    finally:
        sink.close(timeout=2)


def test_publisher_killed_mid_run_delivers_every_stored_event_after_restart(subscribe, sink_uri, publisher_cmd,
                                                                           tmp_path):
    sub = subscribe([TOPICS.anomaly])
    uri = sink_uri(max_inflight="5")
    out = tmp_path / "run1.out"
    proc = _spawn([*publisher_cmd, uri, "events", "5000"], out)
    try:
        wait_until(lambda: proc.poll() is None and len(_lines(out)) >= 200, 30, "200 events to be stored")
    finally:
        _kill(proc)  # mid-run: some events stored but unsent, some sent but not yet acknowledged
    stored = [line for line in _lines(out) if line != "done"]
    assert "done" not in _lines(out), "the publisher finished before the kill; raise the event count"
    with Outbox(tmp_path / "outbox.sqlite") as box:
        left = box.depth()

    drain = subprocess.run([*publisher_cmd, uri, "drain"], capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    stats = json.loads(drain.stdout.splitlines()[-1])
    assert stats["outbox_depth"] == 0 and stats["acked"] >= left

    got = sub.wait_for(lambda m: set(stored) <= set(_event_ids(m)), 15, "every stored event")
    report("publisher SIGKILLed mid-run, then drained", stored, _event_ids(got), f"{left} in the outbox at the kill")
    # de-duplicated by event_id, the deliveries are exactly the events stored: seq 0..N-1, no gaps,
    # where N is what was printed, or one more if the kill fell between a put and its print
    by_id = {m.json()["event_id"]: m.json()["details"]["seq"] for m in got}
    seqs = sorted(by_id.values())
    assert seqs == list(range(len(seqs)))
    assert len(by_id) in (len(stored), len(stored) + 1)
    assert len(got) >= len(by_id)  # duplicates on the wire are allowed


def test_handed_over_events_reported_committed_survive_a_kill(subscribe, sink_uri, publisher_cmd, tmp_path):
    """wait=False: every event whose receipt said committed is delivered after a SIGKILL and restart."""
    sub = subscribe([TOPICS.anomaly])
    uri = sink_uri(max_inflight="5")
    out = tmp_path / "run1.out"
    proc = _spawn([*publisher_cmd, uri, "nowait", "50000"], out)
    try:
        wait_until(lambda: proc.poll() is None and len(_lines(out)) >= 300, 60, "300 events committed")
    finally:
        _kill(proc)
    committed = [line for line in _lines(out) if line != "done"]
    assert "done" not in _lines(out), "the publisher finished before the kill; raise the event count"
    drain = subprocess.run([*publisher_cmd, uri, "drain"], capture_output=True, text=True, timeout=60)
    assert drain.returncode == 0, drain.stderr
    got = sub.wait_for(lambda m: set(committed) <= set(_event_ids(m)), 15, "every committed event")
    report("publisher SIGKILLed with wait=False, then drained", committed, _event_ids(got))
    seqs = sorted({m.json()["event_id"]: m.json()["details"]["seq"] for m in got}.values())
    assert seqs == list(range(len(seqs)))  # no hole: what was committed is a prefix, in order
