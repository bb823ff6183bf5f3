"""Cutting a live sample stream into the bundle's windows, with wall-clock times.

Blocks arrive in any size; windows come out exactly as ``sliding_windows`` would cut the
same samples offline (the parity the tests check). A gap in the stream (dropped frames, a
reconnect) restarts windowing, so no window ever joins samples from both sides of a gap.
"""
from __future__ import annotations

import numpy as np

from factoryedge.errors import SourceError


class StreamWindower:
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

        Returns (windows (k, window, channels), end times (k,)) of every window completed.
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
