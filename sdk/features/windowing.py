"""Cutting a signal into overlapping windows, identically on the training side and the device."""
from __future__ import annotations

import numpy as np

from factoryedge.errors import ConfigError, DataError


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
