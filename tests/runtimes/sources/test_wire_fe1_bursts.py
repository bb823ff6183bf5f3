"""fe1 burst boundaries: the FLAG_BURST_START bit, and pauses in device timestamps at a known rate."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes.sources.wire import (
    FLAG_BURST_START,
    FLAG_TIMESTAMP,
    HEADER_SIZE,
    Fe1Decoder,
    Frame,
    encode_fe1_frame,
)

FS = 25600.0
N = 256  # samples per frame: 10 ms at FS, so the tolerance is 5 ms
FRAME_US = 10_000


def frame(seq: int, ts: int | None = None, burst: bool = False, n: int = N) -> bytes:
    return encode_fe1_frame(np.full((n, 1), seq % 1000, np.int16), seq, "int16", ts, burst)


def decode(data: bytes, sample_rate: float | None = None, chunk: int = 97) -> tuple[list[Frame], Fe1Decoder]:
    dec = Fe1Decoder(sample_rate)
    frames: list[Frame] = []
    for k in range(0, len(data), chunk):
        frames += dec.feed(data[k : k + chunk])
    return frames + dec.flush(), dec


@pytest.mark.parametrize("ts", [None, 123_456_789])
def test_the_burst_flag_round_trips_and_is_a_gap_but_not_loss(ts):
    data = frame(41, ts) + frame(42, ts and ts + FRAME_US, burst=True) + frame(43, ts and ts + 2 * FRAME_US)
    assert data[4] == (FLAG_TIMESTAMP if ts else 0)
    second = data[len(data) // 3 :]
    assert second[4] == FLAG_BURST_START | (FLAG_TIMESTAMP if ts else 0)
    frames, dec = decode(data)
    assert [(f.seq, f.burst_start, f.gap) for f in frames] == [(41, False, False), (42, True, True), (43, False, False)]
    assert [f.timestamp_us for f in frames] == ([None] * 3 if ts is None else [ts, ts + FRAME_US, ts + 2 * FRAME_US])
    assert np.array_equal(frames[1].samples, np.full((N, 1), 42, np.int16))
    s = dec.stats
    assert (s.bursts, s.dropped_frames, s.seq_restarts, s.resyncs, s.clock_jumps) == (1, 0, 0, 0, 0)
    assert (s.crc_errors, s.header_errors, s.bytes_discarded, s.frames_ok) == (0, 0, 0, 3)


def test_a_flag_on_the_first_frame_seen_counts_as_a_burst():
    (f,), dec = decode(frame(0, burst=True))
    assert f.burst_start and f.gap and dec.stats.bursts == 1


def test_a_flagged_frame_after_lost_frames_is_both_a_burst_and_loss():
    frames, dec = decode(frame(7) + frame(8) + frame(12, burst=True) + frame(13))
    assert [(f.seq, f.dropped_before, f.burst_start) for f in frames] == [(7, 0, False), (8, 0, False),
                                                                          (12, 3, True), (13, 0, False)]
    assert (dec.stats.dropped_frames, dec.stats.bursts) == (3, 1)


def test_a_flagged_frame_right_after_a_crc_error_still_starts_its_burst():
    damaged = bytearray(frame(1))
    damaged[HEADER_SIZE + 5] ^= 0x40  # a payload bit: only the CRC can tell
    frames, dec = decode(frame(0) + bytes(damaged) + frame(2, burst=True) + frame(3))
    assert [(f.seq, f.dropped_before, f.burst_start, f.gap) for f in frames] == [
        (0, 0, False, False), (2, 1, True, True), (3, 0, False, False)]
    s = dec.stats
    assert (s.crc_errors, s.dropped_frames, s.bursts, s.resyncs) == (1, 1, 1, 1)


def test_a_damaged_flagged_frame_is_lost_and_its_burst_not_counted():
    damaged = bytearray(frame(1, burst=True))
    damaged[-1] ^= 0x01  # the CRC itself
    frames, dec = decode(frame(0) + bytes(damaged) + frame(2))
    assert [(f.seq, f.dropped_before, f.burst_start, f.gap) for f in frames] == [(0, 0, False, False),
                                                                                (2, 1, False, True)]
    assert (dec.stats.bursts, dec.stats.dropped_frames, dec.stats.crc_errors) == (0, 1, 1)


def periodic(bursts: int, frames_per_burst: int, period_us: int, t0: int = 5_000_000, flag: bool = False) -> bytes:
    """Consecutive sequence numbers across bursts, as a sensor that loses nothing sends them."""
    out = []
    for b in range(bursts):
        for k in range(frames_per_burst):
            seq = b * frames_per_burst + k
            out.append(frame(seq, t0 + b * period_us + k * FRAME_US, burst=flag and k == 0))
    return b"".join(out)


def test_pauses_in_device_timestamps_start_bursts_at_a_known_rate():
    data = periodic(bursts=4, frames_per_burst=3, period_us=10_000_000)
    frames, dec = decode(data, sample_rate=FS)
    assert [f.seq for f in frames if f.gap] == [3, 6, 9]
    assert all(f.burst_start and not f.dropped_before and not f.clock_jump for f in frames if f.gap)
    s = dec.stats
    # the first burst has nothing before it to pause after; the flag would have counted it
    assert (s.bursts, s.dropped_frames, s.seq_restarts, s.clock_jumps, s.resyncs) == (3, 0, 0, 0, 0)


def test_without_the_rate_only_the_flag_marks_bursts():
    assert not any(f.gap for f in decode(periodic(3, 3, 10_000_000))[0])
    frames, dec = decode(periodic(3, 3, 10_000_000, flag=True))
    assert [f.seq for f in frames if f.gap] == [0, 3, 6] and dec.stats.bursts == 3


def test_flag_and_timestamps_together_count_each_burst_once():
    frames, dec = decode(periodic(3, 3, 10_000_000, flag=True), sample_rate=FS)
    assert [f.seq for f in frames if f.gap] == [0, 3, 6] and dec.stats.bursts == 3


def test_a_continuous_timestamped_stream_has_no_bursts():
    frames, dec = decode(periodic(bursts=1, frames_per_burst=50, period_us=0), sample_rate=FS)
    assert len(frames) == 50 and not any(f.gap for f in frames) and dec.stats.bursts == 0


@pytest.mark.parametrize(
    "n, off_us, burst, jump",
    [
        (N, 4_999, False, False),  # 10 ms frames: within half a frame is jitter, not a pause
        (N, 5_001, True, False),
        (N, -4_999, False, False),
        (N, -5_001, False, True),
        (16, 999, False, False),  # 0.625 ms frames: the tolerance never drops below 1 ms
        (16, 1_001, True, False),
        (16, -1_001, False, True),
    ],
)
def test_the_tolerance_is_half_the_previous_frame_and_at_least_1_ms(n, off_us, burst, jump):
    duration_us = n * 1e6 / FS
    t1 = 1_000_000 + round(duration_us) + off_us
    frames, dec = decode(frame(0, 1_000_000, n=n) + frame(1, t1, n=n), sample_rate=FS)
    assert (frames[1].burst_start, frames[1].clock_jump, frames[1].gap) == (burst, jump, burst or jump)
    assert (dec.stats.bursts, dec.stats.clock_jumps, dec.stats.dropped_frames) == (int(burst), int(jump), 0)


def test_a_timestamp_going_backwards_without_a_restart_is_a_clock_jump():
    frames, dec = decode(frame(0, 9_000_000) + frame(1, 9_010_000) + frame(2, 100) + frame(3, 10_100), sample_rate=FS)
    assert [(f.gap, f.clock_jump, f.restarted) for f in frames] == [(False, False, False), (False, False, False),
                                                                  (True, True, False), (False, False, False)]
    assert (dec.stats.clock_jumps, dec.stats.seq_restarts, dec.stats.bursts) == (1, 0, 0)


def test_after_lost_frames_or_a_restart_the_time_rule_stays_out():
    # frames 2..3 lost: the timestamp pause is their duration, not a burst; then the MCU restarts
    data = frame(0, 0) + frame(1, FRAME_US) + frame(4, 4 * FRAME_US) + frame(0, 0) + frame(1, FRAME_US)
    frames, dec = decode(data, sample_rate=FS)
    assert [(f.dropped_before, f.restarted, f.burst_start, f.clock_jump) for f in frames] == [
        (0, False, False, False), (0, False, False, False), (2, False, False, False),
        (0, True, False, False), (0, False, False, False)]
    assert (dec.stats.dropped_frames, dec.stats.seq_restarts, dec.stats.bursts, dec.stats.clock_jumps) == (2, 1, 0, 0)


def test_reset_forgets_the_last_timestamp():
    dec = Fe1Decoder(FS)
    dec.feed(frame(0, 1_000_000))
    dec.reset()
    (f,) = dec.feed(frame(1, 99_000_000))
    assert not f.gap and dec.stats.bursts == 0


def test_timestamps_at_the_top_of_the_uint64_range_compare_exactly():
    top = 2**64 - 1 - 3 * FRAME_US
    frames, dec = decode(frame(0, top) + frame(1, top + FRAME_US) + frame(2, top + 2 * FRAME_US + 5_001),
                         sample_rate=FS)
    assert [f.burst_start for f in frames] == [False, False, True]


@pytest.mark.parametrize("rate", [0, -1.0, float("nan")])
def test_a_decoder_refuses_a_rate_that_is_not_positive(rate):
    with pytest.raises(ConfigError, match=r"sample_rate=.* must be a positive number of Hz"):
        Fe1Decoder(rate)
