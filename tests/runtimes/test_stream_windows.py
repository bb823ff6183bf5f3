import numpy as np
import pytest

from factoryedge.errors import SourceError
from factoryedge.features.windowing import sliding_windows
from factoryedge.runtimes.stream_windows import StreamWindower


@pytest.mark.parametrize("block", [1, 7, 64, 1000, 5000])
def test_stream_windows_equal_offline_windows(block):
    fs, window, hop = 1000.0, 256, 64
    x = np.random.default_rng(0).normal(size=(4000, 3)).astype(np.float32)
    sw = StreamWindower(window, hop, 3, fs, capacity_windows=4)
    got, ends = [], []
    for i in range(0, len(x), block):
        chunk = x[i : i + block]
        w, t = sw.push(chunk, t_last=(i + len(chunk) - 1) / fs)
        got.append(w)
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
