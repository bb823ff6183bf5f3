"""ReplaySource on snapshot recordings: one burst at a time, at the bursts' times, never a window across two."""
from __future__ import annotations

import time

import numpy as np
import pytest

from factoryedge.errors import DataError
from factoryedge.features.windowing import StreamWindower
from factoryedge.runtimes.sources.replay import ReplaySource

FS = 1000.0
BURST = 100
T_S = np.array([0.0, 10.0, 20.0, 35.0])  # uneven on purpose: the recording's times, not a fixed period


@pytest.fixture
def snapshots(tmp_path):
    # each burst holds its index, so a window that mixed two bursts would show two values
    signal = np.stack([np.full((BURST, 2), i, np.float16) for i in range(len(T_S))])
    path = tmp_path / "bearing.npz"
    np.savez(path, signal=signal, t_s=T_S, sample_rate=np.float64(FS), channels=np.array(["horizontal", "vertical"]))
    return path, signal


def test_each_burst_is_its_own_gap_flagged_run_of_blocks(snapshots):
    path, signal = snapshots
    src = ReplaySource.from_uri(f"replay://{path}?speed=0&block=30")
    blocks = list(src.blocks())
    assert src.sample_rate == FS and src.channels == 2
    assert [b.n for b in blocks] == [30, 30, 30, 10] * len(T_S)  # a block never spans two bursts
    assert [b.gap for b in blocks] == [True, False, False, False] * len(T_S)
    assert [b.seq for b in blocks[:5]] == [0, 30, 60, 90, 100]
    assert np.array_equal(np.concatenate([b.samples for b in blocks]), signal.reshape(-1, 2).astype(np.float32))


def test_windows_never_span_two_bursts(snapshots):
    path, _ = snapshots
    window, hop = 40, 20
    windower = StreamWindower(window, hop, 2, FS)
    per_burst: dict[int, int] = {}
    for block in ReplaySource(path, speed=0, block=33).blocks():
        windows, _ = windower.push(block.samples, block.t_wall, gap=block.gap)
        for w in windows:
            values = np.unique(w)
            assert len(values) == 1, f"a window mixes bursts {values}"
            per_burst[int(values[0])] = per_burst.get(int(values[0]), 0) + 1
    assert per_burst == {i: (BURST - window) // hop + 1 for i in range(len(T_S))}


def test_t_wall_follows_the_recording_and_arrival_is_paced_by_speed(snapshots):
    path, _ = snapshots
    speed = 500.0  # 35 s of recording in 70 ms
    start_wall, start = time.time(), time.monotonic()
    blocks = list(ReplaySource(path, speed=speed, block=50).blocks())
    firsts = [b for b in blocks if b.gap]
    # t_wall: the replay's start plus the recording's time of the block's last sample, unscaled
    t_rec = np.array([b.t_wall for b in firsts]) - (firsts[0].t_wall - 50 / FS)
    assert t_rec - 50 / FS == pytest.approx(T_S, abs=1e-3)
    assert firsts[0].t_wall >= start_wall
    assert all(np.diff([b.t_wall for b in blocks]) > 0) and all(np.diff([b.t_monotonic for b in blocks]) >= 0)
    # each block arrives no earlier than its recording time / speed
    for b in blocks:
        burst, within = divmod(b.seq, BURST)
        assert b.t_monotonic - start >= (T_S[burst] + (within + b.n) / FS) / speed - 1e-4


def test_loop_continues_the_recording_clock(snapshots):
    path, _ = snapshots
    src = ReplaySource(path, speed=0, block=100, loop=True)
    blocks = []
    for b in src.blocks():
        blocks.append(b)
        if len(blocks) == 2 * len(T_S) + 1:
            src.close()
    assert all(b.gap for b in blocks) and src.loops == 2
    assert all(np.diff([b.t_wall for b in blocks]) > 0)


def test_a_snapshot_file_without_times_per_burst_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, signal=np.zeros((3, 100, 2), np.float32), t_s=np.array([0.0, 10.0]), sample_rate=FS)
    with pytest.raises(DataError, match="3 bursts but"):
        ReplaySource(path, speed=0).open()
