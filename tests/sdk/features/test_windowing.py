"""Offline and streaming windowing cut the same windows: the device sees what training saw."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factoryedge.errors import SourceError
from factoryedge.features.windowing import StreamWindower, sliding_windows, window_starts


@pytest.mark.parametrize("block", [1, 7, 64, 1000, 5000])
def test_stream_windows_equal_offline_windows(block):
    fs, window, hop = 1000.0, 256, 64
    x = np.random.default_rng(0).normal(size=(4000, 3)).astype(np.float32)
    sw = StreamWindower(window, hop, 3, fs, capacity_windows=4)
    got, ends = [], []
    for i in range(0, len(x), block):
        chunk = x[i : i + block]
        w, t = sw.push(chunk, t_last=(i + len(chunk) - 1) / fs)
        got.append(w.copy())  # a view, valid until the next push
        ends.append(t)
    got = np.concatenate(got)
    np.testing.assert_array_equal(got, sliding_windows(x, window, hop))
    # each window's end time is the time of its last sample
    expected_ends = (np.arange(len(got)) * hop + window - 1) / fs
    np.testing.assert_allclose(np.concatenate(ends), expected_ends, atol=1e-9)


def test_gap_restarts_windowing():
    sw = StreamWindower(100, 50, 1, 100.0)
    a = np.zeros((80, 1), np.float32)
    b = np.ones((120, 1), np.float32)
    assert len(sw.push(a, 0.79)[0]) == 0
    w, _ = sw.push(b, 5.0, gap=True)
    assert len(w) == 1 and np.all(w == 1.0)  # nothing from before the gap
    assert sw.gaps == 1


def test_wrong_channel_count():
    with pytest.raises(SourceError, match=r"expected \(n, 2\)"):
        StreamWindower(10, 5, 2, 10.0).push(np.zeros((5, 3), np.float32), 0.0)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_blocks_and_gaps_give_the_offline_windows_of_each_run(data):
    """Any block sizes, any buffer size, gaps between runs: each run's ``sliding_windows``."""
    fs = 1000.0
    window = data.draw(st.integers(16, 64), label="window")
    hop = data.draw(st.integers(1, window), label="hop")
    channels = data.draw(st.integers(1, 3), label="channels")
    runs = data.draw(st.lists(st.integers(0, 400), min_size=1, max_size=4), label="run lengths")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    sw = StreamWindower(window, hop, channels, fs, capacity_windows=data.draw(st.integers(1, 4), label="capacity"))
    got_w, got_t = [np.empty((0, window, channels), np.float32)], [np.empty(0)]
    want_w, want_t = [], []
    t0, gaps = 1_700_000_000.0, 0
    for r, length in enumerate(runs):
        run = rng.normal(size=(length, channels)).astype(np.float32)
        want_w.append(sliding_windows(run, window, hop))
        want_t.append(t0 + (window_starts(length, window, hop) + window - 1) / fs)
        pos = 0
        while pos < length:
            size = min(data.draw(st.integers(1, 3 * window), label="block"), length - pos)
            gap = pos == 0 and r > 0  # the first block after a gap says so
            gaps += gap
            w, t = sw.push(run[pos : pos + size], t_last=t0 + (pos + size - 1) / fs, gap=gap)
            got_w.append(w.copy())  # a view, valid until the next push
            got_t.append(t)
            pos += size
        t0 += length / fs + 7.5  # the stream stops, then resumes later
    np.testing.assert_array_equal(np.concatenate(got_w), np.concatenate(want_w))
    np.testing.assert_allclose(np.concatenate(got_t), np.concatenate(want_t), rtol=0, atol=1e-6)
    assert sw.gaps == gaps


def test_windows_are_read_only_views_with_contiguous_channel_rows():
    sw = StreamWindower(16, 4, 2, 100.0, capacity_windows=1)
    x = np.arange(80, dtype=np.float32).reshape(40, 2)
    w, _ = sw.push(x, 0.39)
    assert not w.flags.writeable
    assert np.swapaxes(w, 1, 2)[0, 0].flags.c_contiguous  # one channel of one window is one row
    np.testing.assert_array_equal(w, sliding_windows(x, 16, 4))
