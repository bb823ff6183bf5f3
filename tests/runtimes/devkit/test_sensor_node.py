"""The software sensor node: its continuous stream unchanged, and a periodic-burst mode."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from factoryedge.data.recording import Recording
from factoryedge.errors import ConfigError
from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer
from factoryedge.runtimes.sources.serial_source import SerialSource
from factoryedge.runtimes.sources.wire import Fe1Decoder, encode_fe1_frame
from tests.runtimes.sources.ptys import Pty, Reader, poll

FS = 1000.0
SCALE = 1 / 2048


def ramp(n: int = 1000, channels: int = 1) -> Recording:
    """Sample k holds k (in LSB), so where every sample went is plain to see."""
    counts = np.arange(n, dtype=np.float64)[:, None].repeat(channels, axis=1)
    return Recording(counts * SCALE, FS, tuple(f"ch{i}" for i in range(channels)), "ramp", "normal")


class Collect:
    """An endpoint that keeps each write with its time, as a wire would deliver it."""

    def __init__(self) -> None:
        self.writes: list[tuple[float, bytes]] = []
        self.first = threading.Event()

    def write(self, data: bytes) -> None:
        self.writes.append((time.monotonic(), data))
        self.first.set()

    def decode(self, sample_rate: float | None = None):
        dec = Fe1Decoder(sample_rate)
        frames = [f for _, data in self.writes for f in dec.feed(data)]
        return frames, dec


def test_the_default_stream_is_the_continuous_one_it_always_was():
    out = Collect()
    stats = SensorStreamer(ramp(1000), out, frame=256, speed=0).run()
    expected = [encode_fe1_frame(np.arange(k, min(k + 256, 1000), dtype=np.int16)[:, None], k // 256)
                for k in range(0, 1000, 256)]
    assert [data for _, data in out.writes] == expected  # no flag, no timestamp, same bytes
    assert (stats.frames, stats.samples, stats.bursts) == (4, 1000, 0)


def test_periodic_bursts_number_frames_on_and_flag_and_stamp_each_burst():
    out = Collect()
    stats = SensorStreamer(ramp(1000), out, frame=128, speed=0, burst=300, period=2.5, burst_flag=True,
                           timestamps=True).run()
    frames, dec = out.decode()
    # 3 whole bursts of 300 samples (128 + 128 + 44); the last 100 samples make no burst
    assert [len(f.samples) for f in frames] == [128, 128, 44] * 3
    assert [f.seq for f in frames] == list(range(9)) and dec.stats.dropped_frames == 0
    assert [f.burst_start for f in frames] == [True, False, False] * 3
    assert [f.timestamp_us for f in frames] == [b * 2_500_000 + k * 128_000 for b in range(3) for k in range(3)]
    assert np.array_equal(np.concatenate([f.samples for f in frames])[:, 0], np.arange(900))
    assert (stats.frames, stats.samples, stats.bursts) == (9, 900, 3)


def test_timestamps_alone_mark_the_bursts_for_a_reader_that_knows_the_rate():
    out = Collect()
    SensorStreamer(ramp(1000), out, frame=128, speed=0, burst=300, period=2.5, timestamps=True).run()
    frames, dec = out.decode(sample_rate=FS)
    assert [f.seq for f in frames if f.gap] == [3, 6] and dec.stats.bursts == 2
    assert not any(f.burst_start for f in out.decode()[0])  # no flag on the wire


def test_loop_keeps_numbering_frames_and_the_clock_running():
    out = Collect()
    streamer = SensorStreamer(ramp(600), out, frame=300, speed=0, burst=300, period=1.0, timestamps=True, loop=True)
    original = out.write

    def write(data: bytes) -> None:
        original(data)
        if len(out.writes) == 5:
            streamer.stop()

    out.write = write
    streamer.run()
    frames, _ = out.decode()
    assert [f.seq for f in frames] == list(range(5))
    assert [f.timestamp_us for f in frames] == [k * 1_000_000 for k in range(5)]


def test_bursts_are_paced_a_period_apart():
    out = Collect()
    SensorStreamer(ramp(100), out, frame=50, speed=1.0, burst=20, period=0.05).run()
    starts = [t for t, _ in out.writes]
    # Bursts follow a schedule from the start: a busy machine can make one late, and the next
    # then comes sooner to keep the schedule. Only the span is bounded below: five bursts sent
    # without pacing would take microseconds, paced they take four periods (one of slack for
    # a late first write).
    assert len(starts) == 5 and starts[-1] - starts[0] >= 3 * 0.05, np.diff(starts)


def test_stop_ends_a_long_pause_between_bursts():
    out = Collect()
    streamer = SensorStreamer(ramp(600), out, frame=300, speed=1.0, burst=300, period=3600.0)
    runner = threading.Thread(target=streamer.run, daemon=True)
    runner.start()
    assert out.first.wait(10), "the first burst never went out"
    streamer.stop()
    runner.join(timeout=5)
    assert not runner.is_alive() and streamer.stats.bursts == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"burst_flag": True}, r"burst_flag marks the first frame of each burst; give burst"),
        ({"burst": 0}, r"burst=0 must be a whole number of samples from 1 to the recording's 1000"),
        ({"burst": 1001}, r"burst=1001 must be"),
        ({"burst": 2.5}, r"burst=2.5 must be"),
        ({"burst": 500, "period": 0.2}, r"period=0.2 s is shorter than one burst \(500 samples at 1000 Hz = 0.5 s\)"),
        ({"fmt": "csv", "timestamps": True}, r"fe1 header fields; format 'csv' cannot carry them"),
        ({"fmt": "csv", "burst": 100, "burst_flag": True}, r"format 'csv' cannot carry them"),
    ],
)
def test_impossible_periodic_settings_say_what_is_valid(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SensorStreamer(ramp(1000), Collect(), **kwargs)


def test_a_periodic_node_on_a_pty_is_read_burst_by_burst_by_the_serial_source():
    pytest.importorskip("serial", reason="pyserial is the 'device' extra")
    pty = Pty()  # blocking writes: at speed 0 nothing is lost to a reader that is late
    try:
        src = SerialSource(pty.path, rate=FS, channels=2, scale=SCALE)
        src.open()
        reader = Reader(src)
        SensorStreamer(ramp(1000, channels=2), pty, frame=64, speed=0, burst=200, period=1.0, timestamps=True).run()
        assert poll(lambda: reader.samples() >= 1000), reader.samples()
        blocks = reader.stop()
    finally:
        pty.close()
    firsts = [round(float(b.samples[0, 0]) / SCALE) for b in blocks if b.gap]
    assert firsts == [200, 400, 600, 800]  # each later burst's first sample starts a block
    assert blocks[-1].stats["bursts"] == 4 and blocks[-1].stats["dropped_frames"] == 0


def test_pty_endpoint_carries_a_paced_periodic_node():
    pytest.importorskip("serial", reason="pyserial is the 'device' extra")
    pty = PtyEndpoint()
    try:
        src = SerialSource(pty.path, rate=FS, channels=1, scale=SCALE)
        src.open()
        reader = Reader(src)
        SensorStreamer(ramp(400), pty, frame=50, speed=4.0, burst=100, period=0.2, burst_flag=True).run()
        assert poll(lambda: reader.samples() >= 400), reader.samples()
        blocks = reader.stop()
    finally:
        pty.close()
    assert sum(b.gap for b in blocks) == 4 and blocks[-1].stats["bursts"] == 4
    assert blocks[-1].stats["dropped_frames"] == 0 and pty.dropped_frames == 0
