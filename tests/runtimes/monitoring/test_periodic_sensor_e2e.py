"""A periodic-snapshot sensor on the device: the devkit's sensor node sends a burst every period
over a real pty, frames numbered on across bursts (nothing lost), and the condition monitor
(real serial source, the bundle's windowing and ONNX model, a real Mosquitto) windows each
burst on its own: no window spans two bursts."""
from __future__ import annotations

import threading

import pytest

from factoryedge.data.simulator import simulate_bearing
from factoryedge.runtimes.devkit.sensor_node import SensorStreamer
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.runtimes.sources.ptys import Pty
from tests.support.broker import wait_until
from tests.support.monitoring import SCALE, write_profile
from tests.support.sim_model import RPM, SAMPLE_RATE

pytest.importorskip("serial", reason="pyserial is the 'device' extra")

BURST, BURSTS = 2400, 8  # 0.2 s snapshots at 12 kHz


@pytest.mark.parametrize("mode", ["flag", "timestamps"])
def test_a_periodic_sensor_is_windowed_per_burst(tmp_path, broker, sim_bundle, mode):
    window, hop = sim_bundle.manifest.preprocessing.window, sim_bundle.manifest.preprocessing.hop
    per_burst = (BURST - window) // hop + 1
    joined = (BURSTS * BURST - window) // hop + 1  # what windowing across the bursts would give
    assert joined > BURSTS * per_burst  # so the count below tells the two apart
    rec = simulate_bearing(BURSTS * BURST / SAMPLE_RATE + 0.05, sample_rate=SAMPLE_RATE, rpm=RPM, seed=606)
    pty = Pty()  # blocking writes: a device slowed by a busy machine delays the sensor, never loses frames
    uri = f"serial://{pty.path}?rate={SAMPLE_RATE:g}&format=fe1&channels=1&scale={SCALE!r}"
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, uri, broker)))
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.source.is_open, 10, "the serial source to open the pty")
        # a burst every 0.4 s of sensor time, played 4x faster: real pauses between bursts
        stats = SensorStreamer(rec, pty, burst=BURST, period=0.4, speed=4.0, burst_flag=mode == "flag",
                               timestamps=mode == "timestamps").run()
        assert stats.bursts == BURSTS
        wait_until(lambda: monitor.counters.samples >= BURSTS * BURST, 20, "every burst at the device")
    finally:
        monitor.stop()
        runner.join(timeout=20)
        pty.close()
    assert not runner.is_alive()
    c, source = monitor.counters, monitor.source.stats
    assert c.samples == BURSTS * BURST and c.windows == BURSTS * per_burst, (c.windows, per_burst, joined)
    # the flag marks the first burst too; the time rule needs a frame before it
    assert source["bursts"] == (BURSTS if mode == "flag" else BURSTS - 1) == c.gaps
    assert source["dropped_frames"] == c.dropped_frames == 0 and source["resyncs"] == 0
