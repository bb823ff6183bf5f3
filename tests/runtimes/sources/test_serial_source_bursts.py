"""SerialSource and periodic-snapshot sensors over a real pty: every burst starts a gap-flagged block."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.runtimes.sources.serial_source import SerialSource
from factoryedge.runtimes.sources.wire import encode_fe1_frame
from tests.runtimes.sources.ptys import Pty, Reader, poll

pytest.importorskip("serial", reason="pyserial is the 'device' extra")

FS = 25600.0
FRAME, FRAMES_PER_BURST, BURSTS = 64, 10, 5
BURST = FRAME * FRAMES_PER_BURST
PERIOD_US = 10_000_000  # a 25 ms burst every 10 s


def burst_frames(flag: bool, timestamps: bool) -> list[bytes]:
    """One bytes object per burst; channel 0 holds the burst index, channel 1 the sample index."""
    out = []
    for b in range(BURSTS):
        frames = []
        for k in range(FRAMES_PER_BURST):
            seq = b * FRAMES_PER_BURST + k  # consecutive across bursts: nothing is lost
            samples = np.stack([np.full(FRAME, b), np.arange(FRAME) + seq * FRAME], axis=1).astype(np.int16)
            ts = 3_000_000 + b * PERIOD_US + round(k * FRAME * 1e6 / FS) if timestamps else None
            frames.append(encode_fe1_frame(samples, seq, "int16", ts, burst_start=flag and k == 0))
        out.append(b"".join(frames))
    return out


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


@pytest.mark.parametrize("arrival", ["all at once", "burst by burst"])
@pytest.mark.parametrize("flag, timestamps", [(True, False), (False, True), (True, True)],
                         ids=["flag", "timestamps", "flag+timestamps"])
def test_each_burst_starts_a_gap_block_and_nothing_counts_as_lost(pty, flag, timestamps, arrival):
    bursts = burst_frames(flag, timestamps)
    src = SerialSource.from_uri(f"serial://{pty.path}?rate={FS:g}&format=fe1&channels=2")
    src.open()
    reader = Reader(src)
    if arrival == "all at once":
        pty.write_in_thread(b"".join(bursts))
    else:  # as a sensor sends them: the next burst only after the previous one was read
        for b, data in enumerate(bursts):
            pty.write(data)
            assert poll(lambda b=b: reader.samples() >= (b + 1) * BURST), (b, reader.samples())
    assert poll(lambda: reader.samples() >= BURSTS * BURST), reader.samples()
    blocks = reader.stop()

    got = np.concatenate([b.samples for b in blocks])
    assert np.array_equal(got[:, 1], np.arange(BURSTS * BURST))  # every sample, in order
    for block in blocks:
        assert len(np.unique(block.samples[:, 0])) == 1, "a block spans two bursts"
    starts = [int(b.samples[0, 0]) for b in blocks if b.gap]
    # the time rule needs a previous frame; the flag also marks the stream's first burst
    assert starts == (list(range(BURSTS)) if flag else list(range(1, BURSTS)))
    assert [b.seq for b in blocks if b.gap] == [s * FRAMES_PER_BURST for s in starts]
    assert all(b.dropped == 0 for b in blocks)
    stats = blocks[-1].stats
    assert stats["bursts"] == len(starts) and stats["dropped_frames"] == 0
    assert (stats["resyncs"], stats["seq_restarts"], stats["clock_jumps"], stats["crc_errors"]) == (0, 0, 0, 0)


def test_without_the_rate_timestamps_alone_cannot_split_bursts(pty):
    # the documented limit: device timestamps mean nothing without the sample rate
    src = SerialSource.from_uri(f"serial://{pty.path}?format=fe1&channels=2")
    src.open()
    reader = Reader(src)
    pty.write_in_thread(b"".join(burst_frames(flag=False, timestamps=True)))
    assert poll(lambda: reader.samples() >= BURSTS * BURST)
    blocks = reader.stop()
    assert not any(b.gap for b in blocks) and blocks[-1].stats["bursts"] == 0


def test_a_device_clock_jumping_back_starts_a_block_without_loss(pty):
    frames = [encode_fe1_frame(np.full((FRAME, 1), s, np.int16), s, "int16", ts)
              for s, ts in enumerate([50_000, 52_500, 55_000, 1_000, 3_500])]  # 64 samples = 2.5 ms
    src = SerialSource(pty.path, rate=FS, channels=1)
    src.open()
    reader = Reader(src)
    pty.write_in_thread(b"".join(frames))
    assert poll(lambda: reader.samples() >= 5 * FRAME)
    blocks = reader.stop()
    assert [b.seq for b in blocks if b.gap] == [3]
    assert blocks[-1].stats["clock_jumps"] == 1 and blocks[-1].stats["dropped_frames"] == 0
