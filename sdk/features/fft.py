"""Real and complex FFTs that write into the caller's buffers, for the feature extractors' hot path.

``scipy.fft`` allocates every result; at the sizes the vibration features use (a few
hundred kB to a few MB per call) those allocations cost page faults whenever the C
allocator hands memory back to the system between calls, which doubled the extractor's
time in some runs. scipy's own pocketfft binding takes an ``out`` array; it is not part of
scipy's public API, so it is looked up once, checked, and ``scipy.fft`` with a copy is the
fallback: both give the same bits.
"""
from __future__ import annotations

import numpy as np
import scipy.fft as sfft

try:  # scipy >= 1.4 ships it; the signature is checked by the tests through both paths
    from scipy.fft._pocketfft import pypocketfft as _pocketfft
except ImportError:  # pragma: no cover - depends on the installed scipy
    _pocketfft = None

_BACKWARD = 2  # pocketfft's inorm: scale the inverse by 1/n, as scipy.fft's default "backward" norm does


def rfft_into(x: np.ndarray, out: np.ndarray, workers: int = 1) -> np.ndarray:
    """``scipy.fft.rfft(x, axis=-1)`` written into ``out`` (complex, shape (..., n // 2 + 1))."""
    if _pocketfft is not None:
        return _pocketfft.r2c(x, (x.ndim - 1,), True, 0, out, workers)
    out[...] = sfft.rfft(x, axis=-1, workers=workers)
    return out


def ifft_into(x: np.ndarray, out: np.ndarray, workers: int = 1) -> np.ndarray:
    """``scipy.fft.ifft(x, axis=-1)`` written into ``out`` (complex, same shape)."""
    if _pocketfft is not None:
        return _pocketfft.c2c(x, (x.ndim - 1,), False, _BACKWARD, out, workers)
    out[...] = sfft.ifft(x, axis=-1, workers=workers)
    return out

