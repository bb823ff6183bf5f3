"""The sensor's USB-serial adapter unplugged mid-stream and plugged back in.

The device opens the sensor by a stable name (a symlink in tmp_path, as udev's
/dev/serial/by-id/... is), which leads to a real pty. Unplug: the sensor stops and the pty's
master is closed, so the device's next read fails (EIO) and the node behind the name is gone.
Replug: a new pty, and the name re-pointed to it atomically, as udev does. The real condition
monitor runs with the real serial source on that name, a healthy bearing on both sides.

Required: the device does not exit; it logs the loss and retries the same name; the gap is
flagged (counters, telemetry ``gaps``, health); windowing restarts after the replug, so no
window holds samples from both sides of the seam; and there is no anomaly at the seam.
"""
from __future__ import annotations

import logging
import os
import threading

from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.faults.report import report
from tests.support.broker import wait_until
from tests.support.monitoring import ANOMALIES, SCALE, anomaly_events, write_profile
from tests.support.sim_model import RPM, SAMPLE_RATE

TELEMETRY = "factoryedge/v1/+/+/+/telemetry/score"
HEALTH = "factoryedge/v1/+/+/+/health"
FRAME = 256


def _plug(link, pty: PtyEndpoint) -> None:
    """Point the stable name at ``pty`` in one step (rename over the old link), as udev does."""
    tmp = link.with_name(link.name + ".new")
    os.symlink(pty.path, tmp)
    os.replace(tmp, link)


def _unplug(pty: PtyEndpoint) -> None:
    """Close the master: the device side reads EIO and the node is gone, as on a yanked USB adapter."""
    fd, pty.master = pty.master, -1  # -1: PtyEndpoint.close() must not close a reused fd number later
    os.close(fd)


def _stream(rec, pty: PtyEndpoint) -> tuple[SensorStreamer, threading.Thread]:
    streamer = SensorStreamer(rec, pty, frame=FRAME, scale=SCALE, speed=4.0)
    t = threading.Thread(target=streamer.run, daemon=True)
    t.start()
    return streamer, t


def test_serial_adapter_unplugged_and_replugged(tmp_path, broker, subscribe, sim_bundle, caplog):
    caplog.set_level(logging.INFO, logger="factoryedge.runtimes.sources.serial_source")
    sub = subscribe([ANOMALIES, TELEMETRY, HEALTH])
    spec = sim_bundle.manifest.preprocessing
    window, hop = spec.window, spec.hop
    link = tmp_path / "usb-FTDI_vib0-if00-port0"  # the stable by-id name the profile uses
    first, second = PtyEndpoint(), None
    _plug(link, first)
    before = simulate_bearing(4.0, sample_rate=SAMPLE_RATE, rpm=RPM, seed=611)
    # the second stretch: a whole number of hops past one window, so a restarted windower
    # yields exactly (n - window) / hop + 1 windows and any sample kept from before would add one
    n_after = window + hop * 100
    assert n_after % FRAME == 0
    after = simulate_bearing(n_after / SAMPLE_RATE, sample_rate=SAMPLE_RATE, rpm=RPM, seed=612)
    assert len(after.signal) == n_after
    uri = (f"serial://{link}?rate={SAMPLE_RATE:g}&format=fe1&channels=1&scale={SCALE!r}"
           "&reconnect_min=0.02&reconnect_max=0.2")
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, uri, broker)))
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.source.is_open, 10, "the serial source to open the stable name")
        streamer, streaming = _stream(before, first)
        wait_until(lambda: monitor.counters.windows >= 20, 30, "windows from the first stretch")
        streamer.stop()
        streaming.join(timeout=10)
        first.write(b"\xfe\x01" + bytes(100))  # half a frame on the wire as the plug comes out
        _unplug(first)
        wait_until(lambda: monitor.source.disconnects == 1, 10, "the device to notice the unplug")
        # the reader is inside the reconnect loop now: everything before the seam is scored
        samples_at_seam, windows_at_seam = monitor.counters.samples, monitor.counters.windows
        wait_until(lambda: "reconnect attempt 2 failed" in caplog.text, 10,
                   "the device to retry the same name while it leads nowhere")
        assert runner.is_alive() and monitor.source.reconnects == 0

        second = PtyEndpoint()
        _plug(link, second)
        wait_until(lambda: monitor.source.reconnects == 1, 10, "the device to reopen the same name")
        streamer, streaming = _stream(after, second)
        streaming.join(timeout=60)
        assert not streaming.is_alive() and second.dropped_frames == 0
        wait_until(lambda: monitor.counters.samples == samples_at_seam + n_after, 30,
                   "every sample of the second stretch to be scored")
        windows_after = monitor.counters.windows - windows_at_seam
        # the gap reaches the plant: in telemetry (per period) and in health (since start)
        wait_until(lambda: sum(m.json().get("gaps") or 0 for m in sub.messages(TELEMETRY.replace("+/+/+",
                                                                                               "plant1/l2/pump-7"))) >= 1,
                   10, "telemetry that flags the gap")
        wait_until(lambda: any(m.json()["extra"].get("gaps", 0) >= 1
                               and (m.json().get("source_stats") or {}).get("reconnects") == 1
                               for m in sub.messages() if m.topic.endswith("/health")),
                   10, "health that counts the gap and the reconnect")
        telemetry_made = monitor.counters.telemetry
        wait_until(lambda: {m.json()["seq"] for m in sub.messages() if m.topic.endswith("/telemetry/score")}
                   >= set(range(1, telemetry_made + 1)), 10, "the telemetry made so far")
        assert runner.is_alive() and monitor.failed is None
    finally:
        monitor.stop()
        runner.join(timeout=30)
        first.close()
        if second is not None:
            second.close()
    assert not runner.is_alive()
    telemetry = [m.json() for m in sub.messages() if m.topic.endswith("/telemetry/score")]
    report("serial unplugged/replugged: anomaly events", monitor.counters.events,
           [e["event_id"] for e in anomaly_events(sub)], "a healthy bearing on both sides: none expected")
    report("serial unplugged/replugged: telemetry", telemetry_made,
           [str(t["seq"]) for t in telemetry if t["seq"] <= telemetry_made],
           f"gaps flagged {sum(t['gaps'] for t in telemetry)}; windows {windows_at_seam} before the seam, "
           f"{windows_after} after")

    assert "lost (read failed" in caplog.text and "reconnected (reconnect 1)" in caplog.text
    assert monitor.counters.gaps == 1 and monitor.source.stats["disconnects"] == 1
    # windowing restarted at the seam: not one window more than the second stretch makes alone
    assert windows_after == (n_after - window) // hop + 1
    # no false anomaly at the seam
    assert monitor.counters.events == 0 and not anomaly_events(sub) and monitor.debounce.active is None
    assert sum(t["gaps"] for t in telemetry) == 1
