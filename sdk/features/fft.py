"""Real and complex FFTs that write into the caller's buffers, for the feature extractors' hot path.

``scipy.fft`` allocates every result; at the sizes the vibration features use (a few
hundred kB to a few MB per call) those allocations cost page faults whenever the C
allocator hands memory back to the system between calls, which doubled the extractor's
time in some runs. scipy's own pocketfft binding takes an ``out`` array; it is not part of
scipy's public API, so it is looked up once, and ``scipy.fft`` with a copy is the fallback:
both give the same bits (a test checks). scipy loads on the first transform, not on import,
so a program that never builds a vibration extractor (an inspection station) never loads it.
"""
from __future__ import annotations

import functools

import numpy as np

_BACKWARD = 2  # pocketfft's inorm: scale the inverse by 1/n, as scipy.fft's default "backward" norm does


@functools.cache
def _binding():
    """scipy's pocketfft module (scipy >= 1.4 ships it), or None to use the public scipy.fft."""
    try:
        from scipy.fft._pocketfft import pypocketfft
    except ImportError:  # pragma: no cover - depends on the installed scipy
        return None
    return pypocketfft


def rfft_into(x: np.ndarray, out: np.ndarray, workers: int = 1) -> np.ndarray:
    """``scipy.fft.rfft(x, axis=-1)`` written into ``out`` (complex, shape (..., n // 2 + 1))."""
    binding = _binding()
    if binding is not None:
        return binding.r2c(x, (x.ndim - 1,), True, 0, out, workers)
    import scipy.fft

    out[...] = scipy.fft.rfft(x, axis=-1, workers=workers)
    return out


def ifft_into(x: np.ndarray, out: np.ndarray, workers: int = 1) -> np.ndarray:
    """``scipy.fft.ifft(x, axis=-1)`` written into ``out`` (complex, same shape)."""
    binding = _binding()
    if binding is not None:
        return binding.c2c(x, (x.ndim - 1,), False, _BACKWARD, out, workers)
    import scipy.fft

    out[...] = scipy.fft.ifft(x, axis=-1, workers=workers)
    return out
