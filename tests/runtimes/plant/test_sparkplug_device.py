"""The Sparkplug edge node inside a real ``factoryedge run`` process: SIGKILL, restart, a DCMD, SIGTERM.

The device process scores a replayed recording with the trained sim bundle; a subscriber in
another process decodes everything with Eclipse Tahu's schema.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import yaml

from factoryedge.data.loaders import save_npz
from factoryedge.data.simulator import simulate_bearing
from tests.support.broker import wait_until
from tests.support.sim_model import RPM, SAMPLE_RATE
from tests.support.sparkplug import DOUBLE, command, decode, of, publish


def write_profile(tmp_path, bundle, broker):
    rec = save_npz(simulate_bearing(120.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=77), tmp_path / "normal.npz")
    profile = {
        "identity": {"site": "plant1", "line": "l2", "machine": "pump-7", "device_id": "edge-box-7"},
        "sensor": {"uri": f"replay://{rec}?speed=1&block=512"},
        "model": {"bundle": str(bundle.path)},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.url, "outbox": str(tmp_path / "outbox.sqlite"),
                 "options": {"reconnect_min": 0.05, "reconnect_max": 0.5}, "health_interval_s": 1},
        "sparkplug": {"group_id": "G1", "edge_node_id": "edge-7", "report_interval_s": 0.2},
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def sessions_are_consistent(msgs) -> None:
    """Within each session (from an NBIRTH on) seq counts up by one; a death repeats its birth's bdSeq."""
    bdseq, expected = None, None
    for m in msgs:
        if m.kind == "NBIRTH":
            bdseq, expected = m.bdseq, 1
            assert m.seq == 0
        elif m.kind == "NDEATH":
            assert m.bdseq == bdseq and m.seq is None
        else:
            assert m.seq == expected % 256, (m.kind, m.seq, expected)
            expected += 1


def test_killed_device_leaves_ndeath_restart_increments_bdseq_and_dcmd_sets_threshold(
        tmp_path, broker, subscribe, sim_bundle):
    sub = subscribe(["spBv1.0/#"])
    cmd = [sys.executable, "-m", "factoryedge", "run", str(write_profile(tmp_path, sim_bundle, broker))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def spb():
        return decode(sub.messages())

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: any("Anomaly/Score" in m.metrics for m in of(spb(), "DDATA")), 40,
                   "a DDATA with a score from the device process")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    wait_until(lambda: of(spb(), "NDEATH"), 15, "the broker's NDEATH (the Will) for the killed process")
    assert of(spb(), "NDEATH")[0].bdseq == of(spb(), "NBIRTH")[0].bdseq == 0

    second = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: len(of(spb(), "DBIRTH")) == 2, 40, "the restarted process's BIRTH sequence")
        assert of(spb(), "NBIRTH")[1].bdseq == 1
        publish(broker, "spBv1.0/G1/DCMD/edge-7/pump-7", command([("Model/Threshold", DOUBLE, 123.0)]), tmp_path)
        wait_until(lambda: any(m.metrics.get("Model/Threshold") and m.value("Model/Threshold") == 123.0
                               for m in of(spb(), "DDATA")), 15, "the written threshold in a DDATA")
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, err.decode(errors="replace")[-2000:]
    wait_until(lambda: len(of(spb(), "NDEATH")) >= 2, 10, "the NDEATH of the orderly shutdown")
    msgs = spb()
    assert [m.bdseq for m in of(msgs, "NDEATH")][1:] == [1] * (len(of(msgs, "NDEATH")) - 1)
    assert all(m.qos == 1 and not m.retain for m in of(msgs, "NDEATH"))
    assert [m.kind for m in msgs][:2] == ["NBIRTH", "DBIRTH"]
    sessions_are_consistent(msgs)
    dbirth = of(msgs, "DBIRTH")[0]
    assert dbirth.value("Model/Name") == "sim-bearing" and dbirth.device == "pump-7"
    assert dbirth.value("Model/Threshold") == sim_bundle.manifest.score.threshold
