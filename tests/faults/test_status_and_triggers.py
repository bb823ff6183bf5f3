"""Faults at the broker: a plant-wide power cut where the broker comes back first, and triggers
sent while an inspection station reconnects. Real persistent Mosquitto restarted on the same
port, the device and the PLC in child processes, subscribers in child processes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from factoryedge.runtimes.devkit.plc import Plan, Report
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.inspection.image_model import ImageModel
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.support.broker import HOST, Mosquitto, Subscriber, free_port, require_binary, wait_until
from tests.support.image_bundle import make_image_bundle, uniform_part

# -- (a) stale "online" after a broker-first power cut ----------------------------------------

DEVICE_BASE = "factoryedge/v1/s1/l1/m1"
STATUS = f"{DEVICE_BASE}/status"
EXPIRY_S = 9  # small, so the test waits seconds, not the default minute; refreshed every 3 s

# The device: a sink that publishes its status and then only lives, until SIGKILLed.
_DEVICE = r"""
import sys, threading
from factoryedge.runtimes.sinks.mqtt import MqttSink
sink = MqttSink.from_uri(sys.argv[1])
threading.Event().wait()
"""


def persistent_broker(workdir: Path, binary: str) -> Mosquitto:
    """A broker that writes its database on every change, so a SIGKILL keeps the retained status.

    Mosquitto saves only every ``autosave_interval`` (30 min by default) and on a clean stop; a
    broker killed by a power cut comes back with whatever it saved last. Saving on every change
    makes "the retained online survived the broker's death" certain instead of a matter of timing.
    """
    port = free_port()
    lines = [f"listener {port} {HOST}", f"log_dest file {workdir / 'mosquitto.log'}", "allow_anonymous true",
             "persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
             "autosave_on_changes true", "set_tcp_nodelay true"]
    if os.geteuid() == 0:
        lines.append("user root")  # as root mosquitto would switch to a user who cannot write our temp dir
    return Mosquitto(workdir, port=port, binary=binary, config="\n".join(lines) + "\n")


def judged(statuses: list[dict], now: float) -> str:
    """mqtt.md's rule for a consumer: "gone" unless the latest status is an unexpired online."""
    if not statuses:
        return "gone"
    last = statuses[-1]  # by arrival: the Will's time_epoch is when the device connected, not when it died
    if last["state"] != "online" or now - last["time_epoch"] > last["expiry_s"]:
        return "gone"
    return "live"


def retained_status(broker: Mosquitto, workdir: Path) -> list[dict]:
    """What a consumer that subscribes now is given as the retained status (a fresh, clean session).

    A marker published after the subscription is acknowledged arrives after any retained
    message, so once it is here the answer is complete.
    """
    marker = f"{DEVICE_BASE}/test-marker"
    sub = Subscriber(broker, [STATUS, marker], workdir, clean=True).start()
    try:
        subprocess.run([require_binary("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1",
                        "-t", marker, "-m", "x"], check=True, timeout=10)
        sub.wait_for(lambda m: m, 10, "the marker after the retained status", topic=marker)
        return [m.json() for m in sub.messages(STATUS)]
    finally:
        sub.stop()


def test_a_device_that_dies_while_the_broker_is_down_is_seen_gone_after_the_broker_returns(tmp_path, mosquitto_binary):
    broker = persistent_broker(tmp_path / "broker", mosquitto_binary).start()
    consumer = Subscriber(broker, [STATUS], tmp_path).start()  # a SCADA client: persistent session
    uri = (f"{broker.url}?site=s1&line=l1&machine=m1&device_id=d1&outbox={tmp_path / 'outbox.sqlite'}"
           f"&status_expiry_s={EXPIRY_S}")
    with open(tmp_path / "device.log", "wb") as device_log:
        device = subprocess.Popen([sys.executable, "-c", _DEVICE, uri], stdout=subprocess.DEVNULL, stderr=device_log)
    try:
        statuses = lambda: [m.json() for m in consumer.messages(STATUS)]  # noqa: E731
        # online, then refreshed (every third of the expiry) while the device lives
        wait_until(lambda: len(statuses()) >= 2, 30, "the device's online status and its first refresh")
        assert all(s["state"] == "online" for s in statuses())
        assert statuses()[-1]["expiry_s"] == EXPIRY_S and statuses()[-1]["refresh_s"] == EXPIRY_S / 3
        assert judged(statuses(), time.time()) == "live"

        # the power cut: the broker dies first, then the device, while the broker is down
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait(10)
        device.send_signal(signal.SIGKILL)
        device.wait(10)
        last_refresh = max(s["time_epoch"] for s in statuses())
        broker.stop()  # only collects the dead process
        broker.start()

        # the broker restored the retained online (no Will could fire): without an expiry it would
        # stay so for ever. A consumer following mqtt.md sees the device gone once it has expired,
        restored = retained_status(broker, tmp_path)
        assert [s["state"] for s in restored] == ["online"]  # the stale status this test is about; no Will
        wait_until(lambda: judged(statuses(), time.time()) == "gone", EXPIRY_S + 30, "the consumer to judge the "
                   "device gone")
        gone_after_s = time.time() - last_refresh
        # and the broker drops the expired status: a consumer subscribing now is told nothing
        wait_until(lambda: retained_status(broker, tmp_path) == [], EXPIRY_S + 30,
                   "the broker to drop the expired retained online status")
        assert all(s["state"] == "online" for s in statuses())  # the Will never fired
        print(f"status: retained online restored after the broker restart; judged gone "
              f"{gone_after_s:.1f} s after the last refresh it saw (expiry {EXPIRY_S} s)")
    finally:
        if device.poll() is None:
            device.kill()
            device.wait(10)
        consumer.stop()
        broker.stop()


# -- (b) triggers sent while the station reconnects --------------------------------------------

STATION_BASE = "factoryedge/v1/s1/l1/sorter1"
PARTS, PERIOD_S, FPS = 170, 0.1, 30.0


class Gate:
    """A TCP relay the station reaches the broker through; ``cut`` drops it off the network until ``restore``."""

    def __init__(self, target_port: int) -> None:
        self.target = (HOST, target_port)
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                if not self.open.is_set():
                    raise OSError("gate cut")
                up = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            for s in (conn, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns += [conn, up]
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_image_bundle(tmp_path_factory.mktemp("faults") / "bundle")


def write_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), FPS, (128, 96))
    assert writer.isOpened()
    for p in range(10):
        for _ in range(3):
            writer.write(uniform_part(seed=p, defect=p == 4))
    writer.release()
    return path


def test_every_trigger_sent_while_the_station_reconnects_gets_a_decision(tmp_path, broker, subscribe, bundle):
    gate = Gate(broker.port)
    config = InspectionConfig.parse({"camera": f"file://{write_video(tmp_path / 'parts.avi')}?realtime=true&loop=true",
                                     "trigger": "mqtt", "deadline_ms": 250, "frame_max_wait_ms": 150})
    # default back-off (1 s doubling to 30 s): the station caps it at 1 s itself
    sink = MqttSink.from_uri(f"mqtt://{HOST}:{gate.port}?site=s1&line=l1&machine=sorter1&device_id=d1"
                             f"&outbox={tmp_path / 'outbox.sqlite'}&trigger_session_s=30")
    model = ImageModel.load(bundle.path, backend="onnxruntime")
    sorter = Sorter(config, model, sink)
    runner = threading.Thread(target=sorter.run, daemon=True)
    runner.start()
    plc = None
    try:
        assert sink.wait_connected(10)
        wait_until(lambda: sorter.trigger._session is not None, 10, "the station's trigger session")
        assert sorter.trigger._session.wait_subscribed(10)
        triggers = subscribe([f"{STATION_BASE}/trigger"])  # what the broker accepted from the PLC
        decisions = subscribe([f"{STATION_BASE}/decision"])
        plan = Plan(broker.url, STATION_BASE, parts=PARTS, period=PERIOD_S, wait=60, report=tmp_path / "plc.json",
                    quiet=True)
        plc = subprocess.Popen(plan.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        decisions.wait_for(lambda m: len(m) >= 10, 30, "the station to answer its first parts")

        # the station drops off the network and the broker restarts while the PLC keeps triggering;
        # the station stays away until the PLC has sent another 90 parts (~10 s with the restart)
        gate.cut()
        away_since = time.monotonic()
        broker.restart()
        cut_at = len(triggers.messages())
        triggers.wait_for(lambda m: len(m) >= cut_at + 90, 60, "90 more triggers while the station is away")
        gate.restore()
        away_s = time.monotonic() - away_since

        out, err = plc.communicate(timeout=120)
        assert plc.returncode == 0, err
    finally:
        if plc is not None and plc.poll() is None:
            plc.kill()
            plc.wait(10)
        sorter.stop()
        runner.join(20)
        model.close()
        sink.close()
        gate.close()
    report = Report.read(plan.report)
    reasons = {}
    for d in report.decisions:
        reasons[d.payload["reason"]] = reasons.get(d.payload["reason"], 0) + 1
    stats = sorter.stats()
    print(f"triggers {report.sent} / decisions {len(report.decisions)} / missing {len(report.missing)} "
          f"(reasons {reasons}; station away {away_s:.1f} s; late triggers answered at once: {stats['late_triggers']})")
    assert report.sent == PARTS and report.missing == [], report.missing
    assert not runner.is_alive()
    # held triggers arrived late and were answered fail-safe at once, without waiting for a frame
    late = [d.payload for d in report.decisions if "after the PLC sent it" in d.payload["detail"]]
    assert late and stats["late_triggers"] == len(late)
    assert all(d["verdict"] == "reject" and d["reason"] == "deadline" and d["frame_index"] is None for d in late)
    assert sorter.trigger._session.connects >= 2 and sorter.trigger._session.sessions_lost == 0
