"""Cutting a signal into overlapping windows, identically on the training side and the device.

``sliding_windows`` cuts a recording offline; ``StreamWindower`` cuts a live stream that
arrives in blocks of any size into exactly the same windows (the parity the tests check),
so a model sees on the device what it saw in training.
"""
from __future__ import annotations

import numpy as np

from factoryedge.errors import ConfigError, DataError, SourceError


def check_window(window: int, hop: int) -> None:
    """Reject window/hop settings that cannot work, naming the valid range."""
    if not (isinstance(window, (int, np.integer)) and window >= 16):
        raise ConfigError(f"window must be an integer number of samples >= 16, got {window!r}")
    if not (isinstance(hop, (int, np.integer)) and 1 <= hop <= window):
        raise ConfigError(f"hop must be an integer between 1 and the window ({window}), got {hop!r}")


def sliding_windows(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows of shape (n_windows, window, n_channels) over a (n_samples, n_channels) signal.

    Returns a strided read-only view (no copy). Samples after the last full window are not
    used; a signal shorter than one window gives zero windows.
    """
    check_window(window, hop)
    sig = np.asarray(signal)
    if sig.ndim == 1:
        sig = sig[:, None]
    if sig.ndim != 2:
        raise DataError(f"signal must be (n_samples, n_channels), got shape {sig.shape}")
    if sig.shape[0] < window:
        return np.empty((0, window, sig.shape[1]), dtype=sig.dtype)
    view = np.lib.stride_tricks.sliding_window_view(sig, window, axis=0)[::hop]
    # sliding_window_view puts the window axis last: (n, ch, window) -> (n, window, ch)
    return view.transpose(0, 2, 1)


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Index of the first sample of each window that ``sliding_windows`` yields."""
    check_window(window, hop)
    if n_samples < window:
        return np.empty(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


class StreamWindower:
    """Cuts a live sample stream into ``sliding_windows``' windows, with wall-clock end times.

    A gap in the stream (dropped frames, a reconnect) restarts windowing, so no window ever
    joins samples from both sides of a gap. Samples are kept as float32 in a channel-major
    buffer, so the windows ``push`` returns are strided views whose rows (one channel of one
    window) are contiguous: no window is copied here, and the feature extractor's one copy
    reads whole rows. ``capacity_windows`` sizes the buffer at start; a block larger than the
    room left grows it (to at most the block's own size plus one window), never refused.
    """

    def __init__(self, window: int, hop: int, channels: int, sample_rate: float, capacity_windows: int = 64):
        self.window, self.hop, self.channels, self.fs = window, hop, channels, float(sample_rate)
        self._buf = np.zeros((channels, window + hop * capacity_windows), dtype=np.float32)
        self._start = 0  # first sample still needed (the next window starts here)
        self._len = 0  # end of the buffered samples
        self.gaps = 0

    def reset(self) -> None:
        """Forget buffered samples (after a gap)."""
        self._start = self._len = 0

    def push(self, samples: np.ndarray, t_last: float, gap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Add samples whose last one was taken at wall time ``t_last``.

        Returns (windows (k, window, channels), end times (k,)) of every window completed; a
        window's end time is that of its last sample. The windows are a read-only view of
        the buffer, valid until the next ``push``: copy them to keep them. ``gap`` says the
        samples do not follow the previous block. SourceError if the block is not (n, channels).
        """
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise SourceError(f"source delivered samples of shape {samples.shape}; expected (n, {self.channels})")
        if gap:
            self.gaps += 1
            self.reset()
        n = len(samples)
        self._make_room(n)
        self._buf[:, self._len : self._len + n] = samples.T
        self._len += n
        live = self._len - self._start
        if live < self.window:
            return np.empty((0, self.window, self.channels), np.float32), np.empty(0)
        k = (live - self.window) // self.hop + 1
        item = self._buf.itemsize
        # (k, window, channels), a view (the ndarray constructor: as_strided costs ~10x more per call)
        windows = np.ndarray((k, self.window, self.channels), np.float32, self._buf, self._start * item,
                             (self.hop * item, item, self._buf.shape[1] * item))
        windows.flags.writeable = False
        ends_at = self._start + np.arange(k) * self.hop + self.window  # one past each window's last sample
        ends = t_last - (self._len - ends_at) / self.fs
        self._start += k * self.hop
        return windows, ends

    def _make_room(self, n: int) -> None:
        """Move the samples still needed to the front, and grow the buffer if ``n`` more do not fit."""
        if self._len + n <= self._buf.shape[1]:
            return
        live = self._len - self._start
        buf = self._buf
        if live + n > buf.shape[1]:
            buf = np.zeros((self.channels, live + n + self.window), dtype=np.float32)
        buf[:, :live] = self._buf[:, self._start : self._len]
        self._buf, self._start, self._len = buf, 0, live
