"""ReplaySource: exact samples, real-time pacing, looping, and clear errors for bad recordings."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from factoryedge.errors import ConfigError, DataError
from factoryedge.runtimes import registry
from factoryedge.runtimes.sources.replay import ReplaySource


@pytest.fixture
def recording(tmp_path):
    signal = np.random.default_rng(4).standard_normal((1000, 3)).astype(np.float32)
    path = tmp_path / "run1.npz"
    np.savez(path, signal=signal, sample_rate=np.float64(1000.0))
    return path, signal


def test_as_fast_as_possible_yields_every_sample_in_blocks(recording):
    path, signal = recording
    src = ReplaySource.from_uri(f"replay://{path}?speed=0&block=300")
    blocks = list(src.blocks())
    assert [b.n for b in blocks] == [300, 300, 300, 100] and [b.seq for b in blocks] == [0, 300, 600, 900]
    assert np.array_equal(np.concatenate([b.samples for b in blocks]), signal)
    assert not any(b.gap for b in blocks) and src.sample_rate == 1000.0 and src.channels == 3
    with pytest.raises(ValueError):
        blocks[0].samples[0, 0] = 1  # views of the recording, read-only


def test_paced_at_real_time_times_speed(recording):
    path, _ = recording
    start = time.monotonic()
    blocks = list(ReplaySource(path, speed=4.0, block=50).blocks())  # 1 s of signal at 4x: >= 0.25 s
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 5
    # each block is due when its last sample would have been taken
    due = [(b.seq + b.n) / 4000.0 for b in blocks]
    assert all(b.t_monotonic - start >= d for b, d in zip(blocks, due))


def test_loop_marks_each_restart_as_a_gap_and_close_stops_it(recording):
    path, signal = recording
    src = ReplaySource.from_uri(f"replay://{path}?speed=0&block=400&loop=true")
    blocks = []
    for block in src.blocks():
        blocks.append(block)
        if len(blocks) == 8:
            src.close()
    assert [b.seq for b in blocks] == [0, 400, 800, 0, 400, 800, 0, 400]
    assert [b.gap for b in blocks] == [False, False, False, True, False, False, True, False]
    assert src.loops == 2 and blocks[-1].stats["loops"] == 2


def test_close_from_another_thread_interrupts_a_paced_wait(recording):
    path, _ = recording
    src = ReplaySource(path, speed=0.001, block=1000)  # the first block is due in 1000 s
    got = []
    t = threading.Thread(target=lambda: got.extend(src.blocks()), daemon=True)
    t.start()
    src.close()
    t.join(timeout=5)
    assert not t.is_alive() and got == []


def test_relative_paths_and_one_channel_signals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "mono.npz", signal=np.arange(10, dtype=np.int16), sample_rate=100)
    src = registry.open_source("replay://mono.npz?speed=0", block=4)
    assert isinstance(src, ReplaySource)
    blocks = list(src.blocks())
    assert blocks[0].samples.shape == (4, 1) and blocks[0].samples.dtype == np.float32


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        (b"not a zip", "not a readable .npz"),
        ({"signal": np.zeros((10, 2))}, r"lacks \['sample_rate'\]"),
        ({"signal": np.zeros((10, 2)), "sample_rate": -1.0}, "sample_rate -1.0 must be a positive"),
        ({"signal": np.zeros((0, 2)), "sample_rate": 10}, "at least one sample"),
        ({"signal": np.array(["a", "b"]), "sample_rate": 10}, "must be numbers"),
    ],
)
def test_bad_recordings_are_data_errors(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.savez(path, **content)
    with pytest.raises(DataError, match=message):
        ReplaySource(path).open()


@pytest.mark.parametrize(
    "uri, message",
    [
        ("replay://run.npz?rate=2", "unknown option 'rate'.*valid: speed, block, loop"),
        ("replay://run.npz?speed=-1", "speed='-1' must be a number >= 0.0"),
        ("replay://run.npz?block=0", "block='0' must be an integer from 1"),
        ("replay://run.npz?loop=2", "loop='2' must be true or false"),
        ("replay://", "names no recording"),
    ],
)
def test_bad_replay_uris(uri, message):
    with pytest.raises(ConfigError, match=message):
        ReplaySource.from_uri(uri)
