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
    joins samples from both sides of a gap. ``capacity_windows`` sizes the internal buffer:
    a block larger than it is cut in pieces, never refused. Samples are kept as float32.
    """

    def __init__(self, window: int, hop: int, channels: int, sample_rate: float, capacity_windows: int = 64):
        self.window, self.hop, self.channels, self.fs = window, hop, channels, float(sample_rate)
        self._buf = np.zeros((window + hop * capacity_windows, channels), dtype=np.float32)
        self._len = 0
        self._t_last = 0.0  # wall time of the newest buffered sample
        self.gaps = 0

    def reset(self) -> None:
        """Forget buffered samples (after a gap)."""
        self._len = 0

    def push(self, samples: np.ndarray, t_last: float, gap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Add samples whose last one was taken at wall time ``t_last``.

        Returns (windows (k, window, channels), end times (k,)) of every window completed; a
        window's end time is that of its last sample. ``gap`` says the samples do not follow
        the previous block. SourceError if the block is not (n, channels).
        """
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise SourceError(f"source delivered samples of shape {samples.shape}; expected (n, {self.channels})")
        if gap:
            self.gaps += 1
            self.reset()
        out_w, out_t = [], []
        pos = 0
        n = len(samples)
        while pos < n:
            room = len(self._buf) - self._len
            take = min(room, n - pos)
            self._buf[self._len : self._len + take] = samples[pos : pos + take]
            self._len += take
            pos += take
            # time of the newest buffered sample: t_last minus the samples still to come
            self._t_last = t_last - (n - pos) / self.fs
            w, t = self._drain()
            if len(w):
                out_w.append(w)
                out_t.append(t)
        if not out_w:
            return np.empty((0, self.window, self.channels), np.float32), np.empty(0)
        return np.concatenate(out_w), np.concatenate(out_t)

    def _drain(self) -> tuple[np.ndarray, np.ndarray]:
        if self._len < self.window:
            return np.empty((0, self.window, self.channels), np.float32), np.empty(0)
        k = (self._len - self.window) // self.hop + 1
        idx = np.arange(k)[:, None] * self.hop + np.arange(self.window)[None, :]
        windows = self._buf[idx]
        ends = self._t_last - (self._len - (np.arange(k) * self.hop + self.window)) / self.fs
        consumed = k * self.hop
        keep = self._len - consumed
        self._buf[:keep] = self._buf[consumed : self._len]
        self._len = keep
        return windows, ends
