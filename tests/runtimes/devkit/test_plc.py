"""The devkit PLC as a real process against a real Mosquitto, with a tiny device in the test.

The responder stands in for an inspection station: one paho client in the test process
(the PLC is another process, so DESIGN.md's two-clients-in-one-process trap does not apply)
that answers each trigger with a decision, except where a case needs it not to.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from factoryedge.runtimes.devkit.plc import MALFORMED, Plan, Report, parse_plan

BASE = "factoryedge/v1/s1/l1/sorter1"


class Responder:
    """Answers ``BASE/trigger`` on ``BASE/decision``: reject for odd part numbers, pass for even."""

    def __init__(self, broker, skip=(), duplicate=(), foreign=False):
        self.skip, self.duplicate, self.foreign = set(skip), set(duplicate), foreign
        self.triggers: list[tuple[bytes, float]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(f"{BASE}/trigger", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_trigger
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        assert self._subscribed.wait(10), "the responder never subscribed"

    def _on_trigger(self, client, userdata, msg):
        self.triggers.append((bytes(msg.payload), time.monotonic()))
        try:
            body = msg.payload.decode()
        except UnicodeDecodeError:
            return  # the real station answers on trigger/error; the PLC does not listen there
        pid = json.loads(body)["part_id"] if body.startswith("{") else body
        if pid in self.skip:
            return
        decision = json.dumps({"part_id": pid, "verdict": "reject" if int(pid[-2:]) % 2 else "pass",
                               "reason": "score", "latency_ms": 1.0, "time_epoch": time.time()})
        if self.foreign and pid.endswith("00"):
            client.publish(f"{BASE}/decision", json.dumps({"part_id": "someone-else", "verdict": "pass"}), qos=1)
        for _ in range(2 if pid in self.duplicate else 1):
            client.publish(f"{BASE}/decision", decision, qos=1)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def responder(broker):
    made = []

    def start(**kw):
        made.append(Responder(broker, **kw))
        return made[-1]

    yield start
    for r in made:
        r.close()


def run_plc(plan: Plan, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(plan.command(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("payload", ["json", "text"])
def test_plc_triggers_each_part_and_reports_every_decision(payload, broker, responder, tmp_path):
    device = responder()
    plan = Plan(broker.url, BASE, parts=6, period=0.05, prefix="part-", digits=2, payload=payload,
                malformed_first=True, report=tmp_path / "report.json")
    done = run_plc(plan)
    assert done.returncode == 0, done.stderr
    bodies = [b for b, _ in device.triggers]
    assert bodies[0] == MALFORMED
    ids = [json.loads(b)["part_id"] if payload == "json" else b.decode() for b in bodies[1:]]
    assert ids == [f"part-{k:02d}" for k in range(6)]
    if payload == "json":
        assert all(set(json.loads(b)) == {"part_id", "t"} for b in bodies[1:])
    # paced, not a burst: the PLC sleeps to each part's time before sending it
    arrivals = [t for _, t in device.triggers[1:]]
    assert arrivals[-1] - arrivals[0] >= 5 * 0.05 * 0.5
    report = Report.read(plan.report)
    assert report.sent == 6 and report.missing == [] and report.duplicates == 0
    assert [d.part_id for d in report.decisions] == ids
    assert [d.payload["verdict"] for d in report.decisions] == ["pass", "reject"] * 3
    assert all(d.received_mono >= d.sent_mono and d.round_trip_ms >= 0 for d in report.decisions)
    lines = done.stdout.strip().splitlines()
    assert lines[-1].startswith("plc: 6 triggers sent, 6 decisions (3 pass, 3 reject), 0 missing"), lines
    assert "part-01 reject (score)" in done.stdout


def test_plc_reports_missing_duplicate_and_foreign_decisions(broker, responder, tmp_path):
    responder(skip={"p-03"}, duplicate={"p-01"}, foreign=True)
    plan = Plan(broker.url, BASE, parts=4, period=0.0, prefix="p-", digits=2, wait=1.0, quiet=True,
                report=tmp_path / "report.json")
    done = run_plc(plan)
    assert done.returncode == 0, done.stderr
    report = Report.read(plan.report)
    assert [d.part_id for d in report.decisions] == ["p-00", "p-01", "p-02"]
    assert report.missing == ["p-03"] and report.duplicates == 1 and report.foreign == 1
    assert done.stdout.strip().splitlines() == [report.summary()]
    assert "1 missing" in report.summary()


def test_command_line_round_trips_a_plan(tmp_path):
    plan = Plan("mqtt://10.0.0.5:1884", BASE, parts=3, period=0.125, first_at=1_700_000_000.5, prefix="A-",
                digits=6, payload="text", malformed_first=True, tcp_nodelay=True, wait=2.5,
                report=tmp_path / "r.json", quiet=True)
    assert parse_plan(plan.command()[3:]) == plan


@pytest.mark.parametrize("args, says", [
    (["--broker", "http://x", "--machine-topic", BASE], "is not mqtt://HOST[:PORT]"),
    (["--broker", "mqtt://x", "--machine-topic", "a/+/b"], "without wildcards"),
    (["--broker", "mqtt://x", "--machine-topic", BASE, "--parts", "0"], "--parts 0 must be between"),
    (["--broker", "mqtt://x", "--machine-topic", BASE, "--prefix", " A"], "is not valid"),
    (["--machine-topic", BASE], "required: --broker"),
])
def test_bad_arguments_give_one_line_and_status_2(args, says):
    done = subprocess.run([sys.executable, "-m", "factoryedge.runtimes.devkit.plc", *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr


def test_unreachable_broker_is_status_1(tmp_path):
    from tests.support.broker import free_port

    done = run_plc(Plan(f"mqtt://127.0.0.1:{free_port()}", BASE, parts=1))
    assert done.returncode == 1
    assert done.stderr.startswith("plc: error: cannot reach the MQTT broker"), done.stderr
