"""The far ends ``messaging.py`` runs in processes of their own: an MQTT subscriber and a sensor node.

Separate processes on purpose (DESIGN.md): a paho subscriber sharing a process with the
publisher it measures cuts QoS 1 throughput from ~7k to a few hundred msg/s, and a sensor
in the device's process would share its GIL.

``python mqtt_probe.py subscribe PORT TOPIC count``: prints ``ready`` once subscribed, then
answers each stdin line ``wait RUN N TIMEOUT`` with one JSON line once N distinct messages
of run RUN arrived (payloads start ``B<run>:<seq>:``): first and last arrival (monotonic
clock, shared by every process on Linux), count and duplicates.

``python mqtt_probe.py subscribe PORT TOPIC events``: prints one JSON line per message as it
arrives: the arrival wall time and the payload's state, event_id and window_end_epoch.

``python mqtt_probe.py sensor RECORDING.npz LINK OUT.npy SCALE``: creates a pseudo-terminal
linked at LINK, prints ``ready``, waits for ``go`` on stdin, streams the recording in fe1
frames of 256 samples at its true rate, saves the wall time each frame's write completed to
OUT.npy and prints ``done DROPPED``.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time


def subscribe(port: int, topic: str, mode: str) -> None:
    import paho.mqtt.client as mqtt

    lock = threading.Condition()
    runs: dict[str, dict] = {}
    ready = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(topic, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        ready.set()

    def on_message(client, userdata, message):
        if mode == "events":
            t = time.time()
            body = json.loads(message.payload)
            print(json.dumps({"t": t, "state": body.get("state"), "event_id": body.get("event_id"),
                              "window_end_epoch": body.get("window_end_epoch")}), flush=True)
            return
        t = time.monotonic()
        run, seq = message.payload[1:].split(b":", 2)[:2]
        with lock:
            r = runs.setdefault(run.decode(), {"seen": set(), "first": t, "last": t, "dups": 0})
            if seq in r["seen"]:
                r["dups"] += 1
            else:
                r["seen"].add(seq)
                r["last"] = t
                lock.notify_all()

    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{mode}",
                         protocol=mqtt.MQTTv5)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    if not ready.wait(10):
        sys.exit("subscriber: no SUBACK within 10 s")
    print("ready", flush=True)
    for line in sys.stdin:
        _, run, n, timeout = line.split()
        deadline = time.monotonic() + float(timeout)
        with lock:
            while len(runs.get(run, {}).get("seen", ())) < int(n) and time.monotonic() < deadline:
                lock.wait(0.5)
            r = runs.get(run, {"seen": (), "first": None, "last": None, "dups": 0})
            print(json.dumps({"run": run, "n": len(r["seen"]), "first": r["first"], "last": r["last"],
                              "dups": r["dups"]}), flush=True)
    client.disconnect()
    client.loop_stop()


def sensor(recording: str, link: str, out: str, scale: float) -> None:
    import numpy as np

    from factoryedge.data.loaders import load_recording
    from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer

    rec = load_recording(recording)
    pty = PtyEndpoint(link=link)
    times: list[float] = []

    class Timed:
        def write(self, data: bytes) -> None:
            pty.write(data)
            times.append(time.time())

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    SensorStreamer(rec, Timed(), frame=256, scale=scale).run()
    np.save(out, np.asarray(times))
    print(f"done {pty.dropped_frames}", flush=True)
    sys.stdin.readline()  # keep the pty open until the device has read everything
    pty.close()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "subscribe":
        subscribe(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif role == "sensor":
        sensor(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
    else:
        sys.exit(f"unknown role {role!r}; use subscribe or sensor")
