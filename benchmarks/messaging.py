"""What messaging costs the device: outbox throughput against bare paho, and sensor-to-subscriber latency.

Run: ``python benchmarks/messaging.py [--json PATH]`` (about a minute and a half). Both parts
use a real Mosquitto on loopback (``LocalBroker``) and a paho subscriber in a process of its
own (``mqtt_probe.py``), which notes each arrival time.

``outbox_vs_paho_qos1``: N messages of an anomaly event's size, published as fast as the
caller can, counted at the subscriber: msg/s = N / (last distinct arrival - first publish
call). The device path is ``MqttSink.publish_event`` (commit to the SQLite outbox, then the
drainer sends, PUBACK marks delivered); the reference is one paho client publishing the same
payloads at QoS 1 directly, with the same in-flight window, protocol (MQTT 5) and
TCP_NODELAY. The two alternate over the repeats; the median of each is reported.

``sensor_to_subscriber_p99_ms``: a sensor process streams a 3-axis 25.6 kHz recording in fe1
frames over a real pseudo-terminal, paced to real time (normal running with a 0.3 s fault
every 0.75 s, so a 30 s stream raises and clears about 75 times); the real
``ConditionMonitor`` reads it with the serial source, scores it with a z-score bundle
(``zscore_bundle.py``; window 2048 = 80 ms, hop 512) and publishes through the outbox
to Mosquitto. Latency of one event = the subscriber's arrival time minus the time
the sensor's write of the frame holding the *last sample of the window that caused the
event* returned; nothing else is subtracted. The window length itself (80 ms of signal) is
therefore not in the figure; the debounce is set to k=1, n=1 so the window that crosses the
threshold is the one that raises (clear_windows stays 10: "cleared" events count too, from
the window that completed the clear). Which window caused each event is found by replaying
the same quantised samples through the same model and ``Debounce`` offline; events are
matched to that replay by kind, in order.
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from report import entry, table, write  # benchmarks/report.py: this folder is on sys.path when run as a script

RATE, AXES, FRAME, SCALE = 25_600.0, 3, 256, 1 / 2048
HERE = Path(__file__).parent
ANOMALIES = "factoryedge/v1/+/+/+/event/anomaly"


class Probe:
    """A ``mqtt_probe.py`` child with its stdout read on a thread, so reads can time out."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(HERE / "mqtt_probe.py"), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # EOF

    def line(self, timeout: float) -> str:
        try:
            got = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.proc.args[2:]} said nothing within {timeout} s") from None
        if not got:
            raise RuntimeError(f"{self.proc.args[2:]} exited with {self.proc.wait()}")
        return got

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def event_sized_payload() -> int:
    from factoryedge.runtimes import messages as msg

    ident = msg.Identity(site="plant1", line="line2", machine="pump-7", device_id="edge-7")
    return len(msg.anomaly_payload(ident, severity="alarm", score=3.2, threshold=1.0, window_start=1.7e9,
                                   window_end=1.7e9 + 0.08, model_name="bench-zscore-3axis", model_version="0.0.1",
                                   details={"baselining": False, "top_contributors": {"x_rms": 1.0, "y_kurtosis": 0.5,
                                                                                      "z_envelope": 0.25}}).to_bytes())


# -- outbox vs paho ------------------------------------------------------------------------

def throughput(broker, tmp: Path, n: int, repeats: int, inflight: int) -> dict:
    import paho.mqtt.client as mqtt

    from factoryedge.runtimes.sinks.mqtt import MqttSink
    from factoryedge.runtimes.sinks.paho_client import no_delay

    size = event_sized_payload()
    sub = Probe("subscribe", str(broker.port), "bench/#", "count")
    sub.line(15)
    paho = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="bench-paho",
                       protocol=mqtt.MQTTv5)
    paho.max_inflight_messages_set(inflight)
    connected = threading.Event()
    paho.on_connect = lambda client, *a: (no_delay(client), connected.set())
    paho.connect("127.0.0.1", broker.port)
    paho.loop_start()
    sink = MqttSink.from_uri(broker.uri, site="b", line="b", machine="b", device_id="bench",
                             outbox=str(tmp / "outbox.sqlite"), protocol="5", max_inflight=inflight)
    if not (connected.wait(10) and sink.wait_connected(10)):
        raise RuntimeError("the benchmark clients could not connect to the local broker")

    def payloads(run: str) -> list[bytes]:
        return [f"B{run}:{i}:".encode().ljust(size, b"x") for i in range(n)]

    def run_paho(run: str) -> tuple[float, float]:
        data = payloads(run)
        t0 = time.monotonic()
        infos = [paho.publish("bench/paho", p, qos=1) for p in data]
        t_call = time.monotonic() - t0
        got = arrivals(run, t0)
        for info in infos:
            info.wait_for_publish(30)
        return got, t_call

    def run_outbox(run: str, wait: bool) -> tuple[float, float]:
        data = payloads(run)[: n if not wait else n_sync]
        t0 = time.monotonic()
        receipts = [sink.publish_event("bench/outbox", p, wait=wait) for p in data]
        t_call = time.monotonic() - t0
        got = arrivals(run, t0, len(data))
        if not wait and not all(r.done() for r in receipts):
            raise RuntimeError(f"run {run}: messages arrived before their commit was reported")
        sink.flush(30)  # every PUBACK marked before the next run starts
        return got, t_call

    def arrivals(run: str, t0: float, count: int = n) -> float:
        sub.send(f"wait {run} {count} 60")
        r = json.loads(sub.line(90))
        if r["n"] < count:
            raise RuntimeError(f"run {run}: only {r['n']} of {count} messages arrived")
        return count / (r["last"] - t0)

    # the synchronous call pays one fsync per event: fewer messages keep its runs short
    n_sync = max(1, n // 4)
    kinds = {"paho": run_paho, "outbox": lambda run: run_outbox(run, False),
             "outbox_wait": lambda run: run_outbox(run, True)}
    rates = {k: [] for k in kinds}
    call_us = {k: [] for k in kinds}
    try:
        for r in range(repeats):
            for kind in (list(kinds) if r % 2 == 0 else list(kinds)[::-1]):
                rate, t_call = kinds[kind](f"{kind}{r}")
                count = n_sync if kind == "outbox_wait" else n
                rates[kind].append(rate)
                call_us[kind].append(t_call / count * 1e6)
                print(f"  {kind:<12} run {r}: {rate:8.0f} msg/s  ({t_call / count * 1e6:.0f} us per publish call)",
                      flush=True)
    finally:
        sink.close(10)
        paho.disconnect()
        paho.loop_stop()
        sub.close()
    out, ref = float(np.median(rates["outbox"])), float(np.median(rates["paho"]))
    return entry(out, "msg/s", "paho publish QoS 1 direct, subscriber in another process", ref, out / ref, goal=0.8,
                 messages=n, repeats=repeats, payload_bytes=size, max_inflight=inflight,
                 outbox_runs=[round(x) for x in rates["outbox"]], paho_runs=[round(x) for x in rates["paho"]],
                 outbox_call_us_median=round(float(np.median(call_us["outbox"])), 1),
                 paho_call_us_median=round(float(np.median(call_us["paho"])), 1),
                 outbox_wait_msg_s=round(float(np.median(rates["outbox_wait"]))), outbox_wait_messages=n_sync,
                 outbox_wait_call_us_median=round(float(np.median(call_us["outbox_wait"])), 1))


# -- sensor to subscriber ------------------------------------------------------------------

def make_stream(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(normal running for the bundle, the stream): 2 s normal, then 0.3 s fault / 0.45 s normal.

    0.45 s of normal running is enough to clear: the last faulty window ends 80 ms into it,
    and ten clean windows take 200 ms more.
    """
    from factoryedge.data.simulator import simulate_bearing

    normal = simulate_bearing(15.0, sample_rate=RATE, n_channels=AXES, seed=1).signal
    parts, i = [simulate_bearing(2.0, sample_rate=RATE, n_channels=AXES, seed=10).signal], 0
    while sum(len(p) for p in parts) < seconds * RATE:
        parts.append(simulate_bearing(0.3, sample_rate=RATE, n_channels=AXES, fault="outer_race", severity=1.0,
                                      seed=20 + i).signal)
        parts.append(simulate_bearing(0.45, sample_rate=RATE, n_channels=AXES, seed=40 + i).signal)
        i += 1
    return normal, np.concatenate(parts)


def expected_events(bundle_path: Path, counts: np.ndarray, scoring) -> list[tuple[str, int]]:
    """(kind, index of the window's last sample) for each event the device must publish."""
    from factoryedge.debounce import Debounce
    from factoryedge.features.windowing import sliding_windows
    from factoryedge.runtimes.monitoring.vibration_model import VibrationModel

    samples = counts.astype(np.float32)
    samples *= np.asarray(SCALE, dtype=np.float32)  # as the serial source converts
    model = VibrationModel.load(bundle_path, "onnxruntime", 8)
    try:
        windows = sliding_windows(samples, model.spec.window, model.spec.hop)
        scores = np.concatenate([model.score(np.ascontiguousarray(windows[i : i + 256]))[0]
                                 for i in range(0, len(windows), 256)])
        ends = np.arange(len(scores)) * model.spec.hop + model.spec.window - 1
        events = Debounce(model.rule, scoring).update(scores, ends, ends)
    finally:
        model.close()
    return [(e.kind, int(e.window_end)) for e in events]


def latency(broker, tmp: Path, seconds: float) -> dict:
    from zscore_bundle import zscore_bundle

    from factoryedge.data.loaders import save_npz
    from factoryedge.data.recording import Recording
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import DeviceProfile

    normal, stream = make_stream(seconds)
    bundle = zscore_bundle(tmp / "bundle", normal, RATE, ("x", "y", "z"))
    rec_path = save_npz(Recording(stream, RATE, ("x", "y", "z"), "bench", "unknown"), tmp / "stream.npz")
    profile = DeviceProfile.model_validate({
        "identity": {"site": "plant1", "line": "line2", "machine": "pump-7", "device_id": "edge-7"},
        "sensor": {"uri": f"serial://{tmp / 'vib0'}?rate={RATE:g}&format=fe1&channels={AXES}&scale={SCALE!r}"},
        "model": {"bundle": str(bundle.path), "backend": "onnxruntime"},
        "scoring": {"k": 1, "n": 1, "baseline": {"mode": "off"}},
        "mqtt": {"uri": broker.uri, "outbox": str(tmp / "latency-outbox.sqlite"), "options": {"protocol": "5"}},
    })
    expected = expected_events(bundle.path, np.round(stream / SCALE).astype(np.int16), profile.scoring)
    sub = Probe("subscribe", str(broker.port), ANOMALIES, "events")
    sensor = Probe("sensor", str(rec_path), str(tmp / "vib0"), str(tmp / "frames.npy"), repr(SCALE))
    got: list[dict] = []
    try:
        sub.line(15)
        sensor.line(15)
        monitor = ConditionMonitor(profile)
        runner = threading.Thread(target=monitor.run, name="bench-monitor")
        runner.start()
        try:
            _wait(lambda: monitor.source.is_open, 15, "the serial source to open the pty")
            sensor.send("go")
            dropped = int(sensor.line(seconds + 60).split()[1])
            _wait(lambda: monitor.counters.samples >= len(stream), 15, "the device to read every sample")
            deadline = time.monotonic() + 15
            while len(got) < len(expected) and time.monotonic() < deadline:
                got.append(json.loads(sub.line(max(0.1, deadline - time.monotonic()))))
        finally:
            monitor.stop()
            runner.join(20)
            sensor.send("bye")
        c = monitor.counters
    finally:
        sensor.close()
        sub.close()
    written = np.load(tmp / "frames.npy")
    lat, skew = [], []
    for kind in ("raised", "escalated", "cleared"):
        want = [i for k, i in expected if k == kind]
        seen = [g for g in got if g["state"] == kind]
        for idx, g in zip(want, seen):
            lat.append(g["t"] - written[idx // FRAME])
            # the device stamps a window's end from its read time: a check that the match is right
            skew.append(abs(g["window_end_epoch"] - written[idx // FRAME]))
    lat_ms = np.asarray(lat) * 1e3
    worst = float(lat_ms.max()) if len(lat_ms) else float("nan")
    p50, p99 = (float(np.percentile(lat_ms, q)) for q in (50, 99)) if len(lat_ms) else (float("nan"),) * 2
    kinds = {k: sum(1 for g in got if g["state"] == k) for k in ("raised", "escalated", "cleared")}
    print(f"  {len(got)} events received of {len(expected)} expected {kinds}; windows {c.windows}, "
          f"dropped frames {c.dropped_frames} (sensor side {dropped}), gaps {c.gaps}")
    print(f"  sensor -> subscriber: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.2f} ms; "
          f"largest |window_end_epoch - write time| of a matched event {max(skew, default=np.nan) * 1e3:.1f} ms")
    return entry(p99, "ms", "goal (p99 < 20 ms)", 20.0, p99 / 20.0, higher_is_better=False, goal=20.0, goal_on="value",
                 p50_ms=round(p50, 2), max_ms=round(worst, 2), events=len(lat),
                 expected_events=len(expected), received_events=len(got), stream_s=round(len(stream) / RATE, 1),
                 window_samples=bundle.manifest.preprocessing.window, hop_samples=bundle.manifest.preprocessing.hop,
                 debounce="k=1 n=1 clear_windows=10", dropped_frames=c.dropped_frames + dropped, gaps=c.gaps)


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here (report.py format)")
    ap.add_argument("--messages", type=int, default=2000, help="messages per throughput run")
    ap.add_argument("--repeats", type=int, default=7, help="throughput runs of each kind, interleaved")
    ap.add_argument("--inflight", type=int, default=20, help="in-flight window of both publishers")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the streamed recording")
    ap.add_argument("--only", choices=("throughput", "latency"), help="run one part")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from factoryedge.runtimes.devkit.local_broker import LocalBroker

    results = {}
    # a burst of N QoS 1 messages queues at the broker for the subscriber: lift the default cap
    # of 1000 queued messages per client, beyond which Mosquitto drops them
    broker = LocalBroker("mosquitto", {"max_queued_messages": 0}).start()
    try:
        with tempfile.TemporaryDirectory(prefix="fe-bench-msg-") as d:
            tmp = Path(d)
            if args.only != "latency":
                print(f"outbox vs paho, QoS 1, {args.messages} messages x {args.repeats} runs each, interleaved")
                results["outbox_vs_paho_qos1"] = throughput(broker, tmp, args.messages, args.repeats, args.inflight)
            if args.only != "throughput":
                print(f"sensor -> subscriber latency, {args.seconds:g} s stream at {RATE:g} Hz x {AXES} axes")
                results["sensor_to_subscriber_p99_ms"] = latency(broker, tmp, args.seconds)
    finally:
        broker.stop()
    print()
    print(table(results))
    write(args.json, results)


if __name__ == "__main__":
    main()
