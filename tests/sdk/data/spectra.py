"""Envelope spectrum, the standard bearing-diagnostics check, computed independently of the SDK."""
from __future__ import annotations

import numpy as np
from scipy.signal import butter, hilbert, sosfiltfilt


def envelope_spectrum(x: np.ndarray, fs: float, band: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and magnitude of the envelope of ``x`` band-passed to ``band`` (Hz)."""
    sos = butter(4, band, btype="bandpass", fs=fs, output="sos")
    env = np.abs(hilbert(sosfiltfilt(sos, x)))
    env = (env - env.mean()) * np.hanning(env.size)
    return np.fft.rfftfreq(env.size, 1 / fs), np.abs(np.fft.rfft(env))


def peak_hz(freqs: np.ndarray, mag: np.ndarray, lo: float, hi: float) -> float:
    """Frequency of the largest envelope line between lo and hi Hz."""
    sel = (freqs >= lo) & (freqs <= hi)
    return float(freqs[sel][np.argmax(mag[sel])])


def line_ratio(freqs: np.ndarray, mag: np.ndarray, f0: float, rel_tol: float = 0.01) -> float:
    """Peak within f0 +- rel_tol over the median of the surrounding +-20 Hz: how clearly the line stands out."""
    near = np.abs(freqs - f0) <= rel_tol * f0
    around = (np.abs(freqs - f0) <= 20) & ~near
    return float(mag[near].max() / np.median(mag[around]))
