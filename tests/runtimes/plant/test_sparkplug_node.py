"""The Sparkplug B edge node against a real Mosquitto, in this process, fed by a real LiveState.

Every payload is decoded with Eclipse Tahu's schema (an independent decoder) by a
subscriber in another process.
"""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from factoryedge.runtimes.messages import CommandReply, Identity
from factoryedge.runtimes.plant.config import SparkplugConfig
from factoryedge.runtimes.plant.live import LiveState
from factoryedge.runtimes.plant.sparkplug import SparkplugNode
from factoryedge.runtimes.plant.sparkplug_state import BdSeqStore, parse_state
from tests.support.broker import wait_until
from tests.support.sparkplug import BOOLEAN, DOUBLE, STRING, command, decode, of, publish

IDENTITY = Identity(site="plant1", line="l2", machine="pump-7", device_id="edge-box-7")
NCMD = "spBv1.0/G1/NCMD/edge-7"
DCMD = "spBv1.0/G1/DCMD/edge-7/pump-7"


class Program:
    """Stands in for the device program's execute(): set_threshold lands in the LiveState."""

    def __init__(self, live: LiveState) -> None:
        self.live = live
        self.calls: list[tuple] = []

    def execute(self, name, args, origin):
        self.calls.append((name, args, origin))
        if name == "set_threshold" and args["threshold"] > 0:
            self.live.set_threshold(args["threshold"])
            return CommandReply("ok", f"threshold set to {args['threshold']}")
        return CommandReply("rejected", "threshold must be > 0")


def make_node(tmp_path, broker, *, kind="condition_monitoring", **sparkplug):
    live = LiveState(IDENTITY, kind)
    live.threshold = 4.0
    program = Program(live)
    cfg = SparkplugConfig(group_id="G1", edge_node_id="edge-7", **{"report_interval_s": 0.05, **sparkplug})
    profile = SimpleNamespace(
        identity=IDENTITY, sparkplug=cfg,
        mqtt=SimpleNamespace(uri=broker.url, options={"reconnect_min": 0.05, "reconnect_max": 0.5},
                             outbox=tmp_path / "state" / "outbox.sqlite"))
    return SparkplugNode(profile, live, program.execute), live, program


def spb(sub):
    return decode(sub.messages())


def test_birth_then_data_on_change_then_death_on_close(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, _ = make_node(tmp_path, broker)
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "NBIRTH and DBIRTH")
        live.last_score = 2.5
        live.set_state("warning")
        wait_until(lambda: any("Anomaly/Severity" in m.metrics for m in of(spb(sub), "DDATA")), 10,
                   "DDATA after the score and state changed")
    finally:
        node.close()
    wait_until(lambda: of(spb(sub), "NDEATH"), 10, "the NDEATH published on close")
    msgs = spb(sub)
    assert [m.kind for m in msgs][:3] == ["NBIRTH", "DBIRTH", "DDATA"] and msgs[-1].kind == "NDEATH"
    nbirth, dbirth, ddata, ndeath = msgs[0], msgs[1], msgs[2], msgs[-1]
    assert nbirth.seq == 0 and dbirth.seq == 1 and ddata.seq == 2
    assert nbirth.bdseq == 0 == ndeath.bdseq and ndeath.seq is None
    assert nbirth.metrics["bdSeq"].datatype == 4 and nbirth.value("Node Control/Rebirth") is False
    assert nbirth.metrics["Node Control/Rebirth"].datatype == BOOLEAN
    assert nbirth.value("Node Info/Device ID") == "edge-box-7"
    assert all(m.qos == 0 and not m.retain for m in msgs[:3]) and ndeath.qos == 1 and not ndeath.retain
    assert dbirth.device == "pump-7" and ddata.device == "pump-7"
    assert nbirth.payload.timestamp > 0 and all(m.timestamp > 0 for m in dbirth.payload.metrics)
    # DBIRTH: every metric with its datatype, nulls for what is not known yet, units as engUnit
    d = dbirth.metrics
    assert d["Model/Threshold"].datatype == DOUBLE and dbirth.value("Model/Threshold") == 4.0
    assert d["Anomaly/Score"].datatype == DOUBLE and d["Anomaly/Score"].is_null
    assert d["Anomaly/Active"].datatype == BOOLEAN and dbirth.value("Anomaly/Active") is False
    assert d["Anomaly/Severity"].datatype == STRING and d["Anomaly/Severity"].is_null
    assert d["Anomaly/Events"].datatype == 8 and dbirth.value("Anomaly/Events") == 0
    units = {m.name: dict(zip(m.properties.keys, (v.string_value for v in m.properties.values)))
             for m in dbirth.payload.metrics}
    assert units["Anomaly/Events"] == {"engUnit": "events"} and units["Health/Outbox Depth"] == {"engUnit": "messages"}
    assert all(v.type == STRING for m in dbirth.payload.metrics for v in m.properties.values)
    # DDATA: only what changed (in one message or two, as the reporting thread saw the two
    # writes), named, without datatype (the spec: SHOULD NOT in DATA)
    ddatas = of(msgs, "DDATA")
    assert set().union(*(m.metrics for m in ddatas)) == {"Anomaly/Score", "Anomaly/Active", "Anomaly/Severity"}
    assert ddata.value("Anomaly/Score") == 2.5 and ddatas[-1].value("Anomaly/Severity") == "warning"
    assert all(m.datatype == 0 for d in ddatas for m in d.payload.metrics)
    seqs = [m.seq for m in msgs if m.kind != "NDEATH"]
    assert seqs == list(range(len(seqs)))


def test_rebirth_command_gives_a_fresh_birth_with_the_same_bdseq(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, _ = make_node(tmp_path, broker)
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "the first BIRTH sequence")
        live.last_score = 1.0
        wait_until(lambda: of(spb(sub), "DDATA"), 10, "a DDATA")
        publish(broker, NCMD, command([("Node Control/Rebirth", BOOLEAN, True)]), tmp_path)
        wait_until(lambda: len(of(spb(sub), "DBIRTH")) == 2, 10, "a second BIRTH sequence after the Rebirth")
    finally:
        node.close()
    msgs = [m for m in spb(sub) if m.kind != "NDEATH"]
    second = [i for i, m in enumerate(msgs) if m.kind == "NBIRTH"][1]
    assert msgs[second].seq == 0 and msgs[second + 1].kind == "DBIRTH" and msgs[second + 1].seq == 1
    assert msgs[second].bdseq == msgs[0].bdseq == 0
    assert msgs[second + 1].value("Anomaly/Score") == 1.0  # a BIRTH carries every current value
    assert node.refused == 0


def test_threshold_write_and_bad_commands(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, program = make_node(tmp_path, broker)
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "BIRTH")
        publish(broker, NCMD, b"\xff\x00 not protobuf", tmp_path)
        publish(broker, DCMD, command([("Anomaly/Score", DOUBLE, 9.0)]), tmp_path)  # read-only
        publish(broker, DCMD, command([("No Such Metric", DOUBLE, 9.0)]), tmp_path)
        publish(broker, "spBv1.0/G1/DCMD/edge-7/other-machine", command([("Model/Threshold", DOUBLE, 9.0)]), tmp_path)
        publish(broker, DCMD, command([("Model/Threshold", DOUBLE, -1.0)]), tmp_path)  # the program refuses it
        publish(broker, NCMD, command([("Node Control/Reboot", BOOLEAN, True)]), tmp_path)
        wait_until(lambda: node.refused == 6, 10, "six refused commands")
        publish(broker, DCMD, command([("Model/Threshold", DOUBLE, 7.25)]), tmp_path)
        wait_until(lambda: any(m.metrics.get("Model/Threshold") for m in of(spb(sub), "DDATA")), 10,
                   "the written threshold in a DDATA")
    finally:
        node.close()
    ddata = of(spb(sub), "DDATA")
    assert [m.value("Model/Threshold") for m in ddata if "Model/Threshold" in m.metrics] == [7.25]
    assert max(m.value("Health/Sparkplug Commands Refused") for m in ddata
               if "Health/Sparkplug Commands Refused" in m.metrics) == 6
    assert program.calls[-1] == ("set_threshold", {"threshold": 7.25}, "sparkplug DCMD")
    assert live.threshold == 7.25 and len(of(spb(sub), "NBIRTH")) == 1  # still the same session


def state(online: bool, stamp: int) -> bytes:
    return json.dumps({"online": online, "timestamp": stamp}).encode()


def test_primary_host_state_gates_births_and_host_loss_restarts_the_session(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    host = "spBv1.0/STATE/scada-1"
    t0 = int(time.time() * 1000)
    publish(broker, host, state(False, t0), tmp_path, retain=True)  # the host's Will, retained
    node, live, _ = make_node(tmp_path, broker, primary_host_id="scada-1")
    node.start()
    try:
        wait_until(lambda: node._host_timestamp == t0 and node._subscribed, 15,
                   "the node to read the retained offline STATE")
        # a round trip through the node's reporting thread: a node that ignored STATE would
        # have published its NBIRTH before it handled this command
        publish(broker, NCMD, b"\xff not protobuf", tmp_path)
        wait_until(lambda: node.refused == 1 and sub.messages(NCMD), 10, "the node to refuse a command")
        assert node.births == 0 and not of(spb(sub), "NBIRTH")
        publish(broker, host, state(True, t0 + 1), tmp_path, retain=True)
        wait_until(lambda: of(spb(sub), "DBIRTH"), 10, "BIRTHs once the primary host is online")
        publish(broker, host, state(False, t0 + 2), tmp_path, retain=True)
        wait_until(lambda: of(spb(sub), "NDEATH"), 10, "an NDEATH when the primary host goes offline")
        wait_until(lambda: node._session_bdseq == 1 and node._host_timestamp == t0 + 2 and node._subscribed, 10,
                   "a new session (bdSeq 1) that has read the retained offline STATE")
        publish(broker, host, state(True, t0 - 5), tmp_path, retain=False)  # older than the last: ignored
        publish(broker, host, state(True, t0 + 3), tmp_path, retain=True)
        wait_until(lambda: len(of(spb(sub), "NBIRTH")) == 2, 10, "a re-birth when the host is back")
    finally:
        node.close()
    msgs = spb(sub)
    kinds = [m.kind for m in msgs]
    # MQTT 5: the node's DISCONNECT asks for the Will, so a second NDEATH (same bdSeq) may follow its own
    kinds = [k for i, k in enumerate(kinds) if not (k == "NDEATH" and kinds[i - 1] == "NDEATH")]
    assert kinds[:4] == ["NBIRTH", "DBIRTH", "NDEATH", "NBIRTH"]
    assert [m.bdseq for m in of(msgs, "NBIRTH")] == [0, 1]
    assert {m.bdseq for m in of(msgs, "NDEATH")[:2]} == {0}


def test_seq_wraps_from_255_to_0(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, _ = make_node(tmp_path, broker, report_interval_s=3600)
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "BIRTH")
        for i in range(300):
            live.last_score = float(i)
            assert node.report_now()
        wait_until(lambda: len(of(spb(sub), "DDATA")) == 300, 20, "300 DDATA messages")
    finally:
        node.close()
    seqs = [m.seq for m in spb(sub) if m.kind != "NDEATH"]
    assert seqs == [i % 256 for i in range(302)]
    assert [m.value("Anomaly/Score") for m in of(spb(sub), "DDATA")] == [float(i) for i in range(300)]


def test_inspection_metrics(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, _ = make_node(tmp_path, broker, kind="inspection")
    live.last_decision = {"part_id": "A-17", "verdict": "reject", "reason": "score", "score": 9.5, "latency_ms": 12.5}
    live.decisions[("reject", "score")] += 1
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "BIRTH")
    finally:
        node.close()
    d = of(spb(sub), "DBIRTH")[0]
    assert d.value("Inspection/Last Part ID") == "A-17" and d.value("Inspection/Last Verdict") == "reject"
    assert d.value("Inspection/Last Score") == 9.5 and d.value("Inspection/Rejected") == 1
    assert d.value("Inspection/Passed") == 0
    latency = d.metrics["Inspection/Last Latency"]
    assert latency.datatype == DOUBLE and latency.double_value == 12.5
    assert list(latency.properties.keys) == ["engUnit"] and latency.properties.values[0].string_value == "ms"


def test_bdseq_store_persists_and_wraps(tmp_path):
    path = tmp_path / "s" / "bdseq.json"
    store = BdSeqStore(path)
    assert [store.next(), store.next()] == [0, 1]
    assert BdSeqStore(path).next() == 2  # a restarted process goes on
    path.write_text('{"bdSeq": 255}')
    assert BdSeqStore(path).next() == 0
    path.write_text("garbage")
    assert BdSeqStore(path).next() == 0


def test_broker_outage_reconnects_with_the_next_bdseq_and_births_again(tmp_path, broker, subscribe):
    sub = subscribe(["spBv1.0/#"])
    node, live, _ = make_node(tmp_path, broker)
    node.start()
    try:
        wait_until(lambda: of(spb(sub), "DBIRTH"), 15, "BIRTH")
        broker.restart()
        live.last_score = 3.0  # changes while the broker is away go out in the new session's BIRTH
        wait_until(lambda: node.births == 2, 20, "a BIRTH sequence in the new session")
        assert node._session_bdseq == 1
        assert json.loads((tmp_path / "state" / "sparkplug-G1-edge-7.bdseq.json").read_text()) == {"bdSeq": 1}
        # the subscriber may have come back after that BIRTH (QoS 0 is not queued): ask again
        wait_until(lambda: sub.count("connected") >= 2, 15, "the subscriber to reconnect")
        publish(broker, NCMD, command([("Node Control/Rebirth", BOOLEAN, True)]), tmp_path)
        wait_until(lambda: [m.bdseq for m in of(spb(sub), "NBIRTH")][-1:] == [1], 10, "an NBIRTH with bdSeq 1")
    finally:
        node.close()
    last = of(spb(sub), "DBIRTH")[-1]
    assert last.seq == 1 and last.value("Anomaly/Score") == 3.0


def test_state_payloads():
    assert parse_state(b'{"online": true, "timestamp": 1712345678901}') == (True, 1712345678901)
    for bad in (b"ONLINE", b'{"online": "yes", "timestamp": 1}', b'{"online": true}', b"\xff", b"[]"):
        with pytest.raises(ValueError, match="Sparkplug 3.0 JSON"):
            parse_state(bad)


def test_connection_attempts_that_never_reach_a_broker_use_no_bdseq(tmp_path, broker, subscribe):
    broker.stop()  # the node starts while the broker is down: TCP refused, no CONNECT sent
    node, _, _ = make_node(tmp_path, broker)
    node.start()
    try:
        wait_until(lambda: node.connect_failures >= 2, 10, "refused connection attempts")
        broker.start()
        sub = subscribe(["spBv1.0/#"])
        wait_until(lambda: node.births == 1, 20, "BIRTH once the broker is up")
        assert node._session_bdseq == 0
    finally:
        node.close()
    wait_until(lambda: of(spb(sub), "NDEATH"), 10, "NDEATH")
    assert of(spb(sub), "NDEATH")[0].bdseq == 0
