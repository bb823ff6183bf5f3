"""The systemd watchdog: READY=1, then WATCHDOG=1 only while the scoring loop comes around.

A real Unix datagram socket stands in for systemd's notify socket (the protocol is one
datagram per message). The device reads a real pty; a quiet sensor keeps the pings going
(its read loop times out and comes around), a hung source stops them.
"""
from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.runtimes.sources.base import SampleBlock
from factoryedge.runtimes.watchdog import Watchdog
from tests.support.broker import wait_until
from tests.support.monitoring import SCALE, write_profile
from tests.support.sim_model import RPM, SAMPLE_RATE


class NotifySocket:
    """What systemd listens on: a bound AF_UNIX datagram socket; ``messages()`` drains it."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.got: list[str] = []

    def messages(self) -> list[str]:
        while True:
            try:
                self.got.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path):
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_pings_only_while_the_token_moves_and_nothing_is_stuck(notify):
    wd = Watchdog({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "4000000"})
    assert wd.enabled and wd.interval_s == 4.0 and wd.stall_s == 2.0
    wd.ready()
    assert wd.check(1, now=100.0)  # progress: ping
    assert not wd.check(2, now=100.5)  # progress, but a ping went out 0.5 s ago (at most 4 per period)
    assert wd.check(3, now=101.2)
    assert not wd.check(3, now=103.3)  # no progress for 2.1 s > stall_s: withheld
    assert not wd.check(4, now=104.0, stuck="the model has been scoring one part for 30 s")
    assert wd.withheld == 2
    assert wd.check(5, now=104.5) and wd.withheld == 0
    wd.stopping()
    assert notify.messages() == ["READY=1", "WATCHDOG=1", "WATCHDOG=1", "WATCHDOG=1", "STOPPING=1"]


def test_outside_systemd_or_for_another_pid_it_does_nothing(notify):
    assert not Watchdog({}).enabled and not Watchdog({}).check(1)
    other = Watchdog({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert other.interval_s is None and not other.check(1)
    assert notify.messages() == []
    assert not Watchdog({"NOTIFY_SOCKET": str(notify.path) + ".gone"}).notify("READY=1")  # logged, not raised


def test_a_monitor_on_a_pty_pings_while_streaming_and_while_the_sensor_is_quiet(tmp_path, broker, notify,
                                                                                 sim_bundle):
    pty = PtyEndpoint(link=tmp_path / "vib0")
    uri = f"serial://{tmp_path / 'vib0'}?rate={SAMPLE_RATE:g}&format=fe1&channels=1&scale={SCALE!r}"
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, uri, broker)))
    monitor.watchdog = Watchdog({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "4000000"})
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: "READY=1" in notify.messages(), 20, "READY=1")
        SensorStreamer(simulate_bearing(4.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=5), pty, speed=4.0).run()
        wait_until(lambda: monitor.counters.windows > 0, 20, "windows scored")
        streamed = notify.messages().count("WATCHDOG=1")
        assert streamed >= 1
        # the sensor goes quiet: the read loop still comes around, so this is no hang
        wait_until(lambda: notify.messages().count("WATCHDOG=1") >= streamed + 3, 30, "pings while quiet")
        assert monitor.watchdog.withheld == 0
    finally:
        monitor.stop()
        runner.join(timeout=20)
        pty.close()
    assert notify.messages()[-1] == "STOPPING=1"


class HangingSource:
    """Delivers a few blocks, then a read that never returns (until released): a stuck driver."""

    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hanging = threading.Event()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def blocks(self):
        rec = simulate_bearing(1.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=9).signal.astype(np.float32)
        for i, start in enumerate(range(0, len(rec), 2048)):
            yield SampleBlock(rec[start:start + 2048], 0.0, 1e6 + start / SAMPLE_RATE, i, i == 0, 0, None)
        self.hanging.set()
        self.release.wait()

    def close(self):
        self.release.set()


def test_a_hung_source_stops_the_pings_so_systemd_restarts_the_program(tmp_path, broker, notify, sim_bundle):
    source = HangingSource()
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, "replay://unused.npz", broker)),
                               source=source)
    monitor.watchdog = Watchdog({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(source.hanging.is_set, 20, "the source to hang")
        wait_until(lambda: monitor.watchdog.withheld >= 1, 20, "the watchdog to notice")
        before = notify.messages().count("WATCHDOG=1")
        wait_until(lambda: monitor.watchdog.withheld >= 4, 20, "more checks without progress")
        assert notify.messages().count("WATCHDOG=1") == before  # nothing sent while stuck
    finally:
        monitor.stop()
        runner.join(timeout=20)
    assert not runner.is_alive()
