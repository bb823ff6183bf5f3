"""The live half of the demo: sensor on a pty -> device runtime -> MQTT -> a plant subscriber.

Everything runs on this machine: a local broker, the bearing simulator streaming fe1 frames
into a pseudo-terminal at a multiple of real time with an outer-race fault that develops
halfway, the same ConditionMonitor a Jetson runs (reading the pty through the serial
source), and ``factoryedge watch`` in a separate process printing what a PLC would receive.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

SCALE = 1 / 2048


def _profile(out: Path, bundle_path: Path, broker, rate: float) -> Path:
    path = out / "device.yaml"
    path.write_text(yaml.safe_dump({
        "identity": {"site": "demo-plant", "line": "line-1", "machine": "pump-7", "device_id": "edge-demo"},
        "sensor": {"uri": f"serial://{(out / 'vib0').resolve()}?rate={rate:g}&format=fe1&channels=1&scale={SCALE!r}"},
        "model": {"bundle": str(bundle_path.resolve())},
        "scoring": {"baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str((out / "outbox.sqlite").resolve()),
                 "options": {"protocol": broker.protocol, "client_id": "edge-demo", "keep_delivered": 1000},
                 "telemetry_interval_s": 5, "health_interval_s": 10},
        **plant_sections("edge-demo", report_s=2.0),
    }, sort_keys=False))
    return path


def plant_sections(node: str, report_s: float) -> dict:
    """The demo device's plant outputs: a Sparkplug B node and the operator page (any free port)."""
    return {"sparkplug": {"group_id": "demo-plant", "edge_node_id": node, "report_interval_s": report_s},
            "web": {"host": "127.0.0.1", "port": 0}}


def show_plant_outputs(program, step, broker_uri: str):
    """Print the operator page's URL once the program serves it; start a Sparkplug listener process."""
    deadline = time.monotonic() + 20
    while program.web is None and time.monotonic() < deadline and not program.stopping:
        time.sleep(0.02)
    if program.web is not None:
        next(step)(f"operator page: {program.web.url} (score timeline, events, decisions, rejects; open it while the "
                   f"line runs); Prometheus metrics: {program.web.url}metrics")
    cmd = [sys.executable, "-m", "factoryedge", "sparkplug-listen", "--broker", broker_uri, "--group", "demo-plant"]
    listener, ready, _ = start_relay(cmd, "sparkplug", "# listening")
    ready.wait(10)
    next(step)("a Sparkplug B host in another process prints the decoded NBIRTH/DBIRTH/DDATA beside the JSON events")
    return listener


def run_live(bundle, out: Path, machine_seconds: float, speed: float, step, broker_kind: str = "auto") -> None:
    from factoryedge.data.simulator import simulate_bearing
    from factoryedge.runtimes.devkit.local_broker import LocalBroker
    from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import load_profile

    broker = LocalBroker(broker_kind).start()
    watcher, ready, received = start_watcher(broker.uri, "plant subscriber")
    pty = PtyEndpoint(link=out / "vib0")
    runtime_log = logging.getLogger("factoryedge.runtimes")
    previous_level = runtime_log.level
    runtime_log.setLevel(logging.ERROR)  # let the subscriber's view speak for itself
    monitor = listener = None
    try:
        next(step)(f"MQTT broker: {broker.kind} on {broker.uri}; a plant subscriber listens in another process")
        ready.wait(10)
        profile_path = _profile(out, bundle.path, broker, bundle.manifest.preprocessing.sample_rate)
        monitor = ConditionMonitor(load_profile(profile_path))
        runner = threading.Thread(target=monitor.run, name="demo-device")
        runner.start()
        listener = show_plant_outputs(monitor, step, broker.uri)
        deadline = time.monotonic() + 10
        while not monitor.source.is_open and time.monotonic() < deadline:
            time.sleep(0.02)
        fault_at = machine_seconds / 2
        rec = simulate_bearing(machine_seconds, sample_rate=bundle.manifest.preprocessing.sample_rate, rpm=1797.0,
                               fault="outer_race", fault_onset_s=fault_at, growth_s=machine_seconds / 4, seed=7)
        next(step)(f"device: 'factoryedge run {profile_path}' reads a simulated sensor on {out / 'vib0'} "
                   f"({speed:g}x real time, {machine_seconds:g} s); an outer-race fault starts developing at {fault_at:g} s")
        t0 = time.time()
        SensorStreamer(rec, pty, speed=speed).run()
        time.sleep(1.0)
    finally:
        if monitor is not None:
            monitor.stop()
            runner.join(timeout=20)
        runtime_log.setLevel(previous_level)
        time.sleep(0.5)
        for process in (watcher, listener):
            if process is not None:
                process.terminate()
                process.wait(timeout=5)
        broker.stop()
        pty.close()
    anomalies = [r for r in received if r.startswith("ANOMALY")]
    c = monitor.counters
    first = ""
    if anomalies:
        first_raise = next((e for e in _events(out) if e["state"] == "raised"), None)
        if first_raise:
            first = f"; first raised at machine time {(first_raise['window_end_epoch'] - t0) * speed:.1f} s"
    next(step)(f"device scored {c.windows} windows ({c.dropped_frames} frames dropped), published {c.events} anomaly "
               f"events; the subscriber received {len(anomalies)}{first} (fault began at {fault_at:g} s)")


def _events(out: Path) -> list[dict]:
    """Anomaly events as the device stored them in its outbox (all delivered by now)."""
    return outbox_payloads(out / "outbox.sqlite", "/event/anomaly")


def outbox_payloads(outbox: Path, topic_suffix: str) -> list[dict]:
    """The JSON payloads a device stored in its outbox for topics ending in ``topic_suffix``, in order."""
    import json
    import sqlite3

    con = sqlite3.connect(outbox)
    try:
        rows = con.execute("SELECT payload FROM outbox WHERE topic LIKE ? ORDER BY id", (f"%{topic_suffix}",)).fetchall()
    finally:
        con.close()
    return [json.loads(r[0]) for r in rows]


def start_watcher(broker_uri: str, label: str, topics: list[str] | None = None):
    """``factoryedge watch`` in its own process, each line printed as ``label>``; (process, ready, lines)."""
    cmd = [sys.executable, "-m", "factoryedge", "watch", broker_uri, "--protocol", "3.1.1"]
    for t in topics or []:
        cmd += ["--topic", t]
    return start_relay(cmd, label, "subscribed")


def start_relay(cmd: list[str], label: str, ready_prefix: str):
    """``cmd`` in its own process, each output line printed as ``label>``; ready once a line starts ``ready_prefix``."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ready = threading.Event()
    received: list[str] = []

    def relay():
        for line in process.stdout:
            line = line.rstrip()
            if line.startswith(ready_prefix):
                ready.set()
                continue
            received.append(line)
            print(f"    {label}> {line}", flush=True)

    threading.Thread(target=relay, daemon=True).start()
    return process, ready, received
