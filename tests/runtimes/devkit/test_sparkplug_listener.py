"""``factoryedge sparkplug-listen`` prints the edge node's messages, decoded, one line each."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

from factoryedge.runtimes.devkit.sparkplug_listener import describe
from tests.runtimes.plant.test_sparkplug_node import make_node
from tests.support.broker import wait_until
from tests.support.sparkplug import command


def test_describe_lines():
    line = describe("spBv1.0/G1/DCMD/edge-7/pump-7", command([("Model/Threshold", 10, 4.5)]))
    assert line.startswith("DCMD") and "G1/edge-7/pump-7" in line and "Model/Threshold=4.5" in line
    assert "not a Sparkplug B payload" in describe("spBv1.0/G1/NCMD/edge-7", b"\xff\xff\xff")
    assert describe("spBv1.0/STATE/scada", b'{"online": true}').startswith("STATE   scada")


def test_listener_prints_births_and_data(tmp_path, broker):
    proc = subprocess.Popen([sys.executable, "-m", "factoryedge", "sparkplug-listen", "--broker", broker.url,
                             "--group", "G1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    node, live, _ = make_node(tmp_path, broker)
    try:
        wait_until(lambda: any(line.startswith("# listening") for line in lines), 20, "the listener to subscribe")
        node.start()
        wait_until(lambda: any(line.startswith("DBIRTH") for line in lines), 15, "a DBIRTH line")
        live.last_score = 2.5
        wait_until(lambda: any(line.startswith("DDATA") for line in lines), 10, "a DDATA line")
    finally:
        node.close()
        proc.terminate()
        proc.wait(timeout=10)
    nbirth = next(line for line in lines if line.startswith("NBIRTH"))
    assert "G1/edge-7" in nbirth and "seq 0" in nbirth and "bdSeq 0" in nbirth and "Node Control/Rebirth=false" in nbirth
    ddata = next(line for line in lines if line.startswith("DDATA"))
    assert "G1/edge-7/pump-7" in ddata and "seq 2" in ddata and "Anomaly/Score=2.5" in ddata
