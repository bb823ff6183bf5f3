"""The vibration feature extractor as it was before it was optimised: the reference for parity tests.

Kept verbatim (float64, numpy.fft, a full-length analytic signal), so the optimised
``factoryedge.features.vibration.FeatureExtractor`` is checked against what every bundle up
to now was trained with, and ``benchmarks/feature_speed.py`` can time both side by side.
"""
from __future__ import annotations

import numpy as np

from factoryedge.features.vibration import VibrationFeatureSpec

_EPS = 1e-12


def _band_edges(freqs: np.ndarray, fmin: float, fmax: float, n: int) -> np.ndarray:
    """Bin indices of ``n`` equal-width bands; each band holds at least one bin."""
    idx = np.searchsorted(freqs, np.linspace(fmin, fmax, n + 1))
    for i in range(1, n + 1):
        idx[i] = max(idx[i], idx[i - 1] + 1)
    return idx


class ReferenceFeatureExtractor:
    """The float64 numpy extractor as it stood before the speed work, kept verbatim as the reference."""

    def __init__(self, spec: VibrationFeatureSpec):
        self.spec = spec
        w = spec.window
        self._taper = np.hanning(w)
        freqs = np.fft.rfftfreq(w, 1.0 / spec.sample_rate)
        self._spec_edges = _band_edges(freqs, spec.spectral_fmin, spec.spectral_fmax, spec.spectral_bands)
        self._envelope_bins = None
        if spec.envelope_band is not None:
            lo, hi = np.searchsorted(freqs, spec.envelope_band)
            self._envelope_bins = (int(lo), int(hi))
            self._env_edges = _band_edges(freqs, 0.0, spec.envelope_fmax, spec.envelope_bands)
            self._env_median_stop = int(np.searchsorted(freqs, spec.envelope_fmax))
            self._defect_bins = []
            for order in spec.defect_orders.values():
                f0 = order * (spec.shaft_hz or 0.0)
                tol = max(0.02 * f0, freqs[1])
                lo, hi = np.searchsorted(freqs, [f0 - tol, f0 + tol])
                self._defect_bins.append((int(lo), int(max(hi, lo + 1))))
        self.names = self._names()

    @property
    def n_features(self) -> int:
        return len(self.names)

    def _names(self) -> list[str]:
        s, per_channel = self.spec, []
        per_channel += list(s.time_features)
        band_hz = np.linspace(s.spectral_fmin, s.spectral_fmax, s.spectral_bands + 1)
        per_channel += [f"band{i:02d}_{band_hz[i]:.0f}-{band_hz[i + 1]:.0f}Hz" for i in range(s.spectral_bands)]
        if s.envelope_band is not None:
            env_hz = np.linspace(0.0, s.envelope_fmax, s.envelope_bands + 1)
            per_channel += [f"env{i:02d}_{env_hz[i]:.0f}-{env_hz[i + 1]:.0f}Hz" for i in range(s.envelope_bands)]
            per_channel += [f"env_{name}" for name in s.defect_orders]
        return [f"{ch}.{n}" for ch in s.channels for n in per_channel]

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        s = self.spec
        # Work channel-major, (batch, channels, time), so every reduction runs over
        # contiguous memory.
        x = np.ascontiguousarray(windows.transpose(0, 2, 1), dtype=np.float64)
        x -= x.mean(axis=-1, keepdims=True)
        parts = [self._time_features(x)]
        if s.spectral_bands:
            power = np.abs(np.fft.rfft(x * self._taper, axis=-1)) ** 2
            parts.append(_log_band_energy(power, self._spec_edges))
        if self._envelope_bins is not None:
            parts.extend(self._envelope_features(x))
        feats = np.concatenate(parts, axis=-1).reshape(len(x), -1)
        return feats.astype(np.float32)

    def _time_features(self, x: np.ndarray) -> np.ndarray:
        x2 = x * x
        m2 = x2.mean(axis=-1)
        rms = np.sqrt(m2)
        peak = np.abs(x).max(axis=-1)
        values = {
            "rms": rms,
            "peak": peak,
            "peak_to_peak": x.max(axis=-1) - x.min(axis=-1),
            "crest_factor": peak / (rms + _EPS),
            # Pearson kurtosis (3 for Gaussian noise): impacts from a bearing defect raise it.
            "kurtosis": (x2 * x2).mean(axis=-1) / (m2 * m2 + _EPS),
            "skewness": (x2 * x).mean(axis=-1) / (m2 * rms + _EPS),
        }
        return np.stack([values[name] for name in self.spec.time_features], axis=-1)

    def _envelope_features(self, x: np.ndarray) -> list[np.ndarray]:
        # Analytic signal of the band-passed window in one step: keep the band's positive
        # frequencies, doubled, and invert. Cheaper than filtfilt + Hilbert, no edge transients.
        lo, hi = self._envelope_bins
        spectrum = np.fft.rfft(x, axis=-1)
        analytic = np.zeros(x.shape, dtype=np.complex128)
        analytic[..., lo:hi] = 2.0 * spectrum[..., lo:hi]
        envelope = np.abs(np.fft.ifft(analytic, axis=-1))
        envelope -= envelope.mean(axis=-1, keepdims=True)
        spectrum = np.abs(np.fft.rfft(envelope * self._taper, axis=-1))
        out = []
        if self.spec.envelope_bands:
            out.append(_log_band_energy(spectrum**2, self._env_edges))
        if self._defect_bins:
            floor = np.median(spectrum[..., 1 : self._env_median_stop], axis=-1) + _EPS
            lines = [spectrum[..., lo:hi].max(axis=-1) / floor for lo, hi in self._defect_bins]
            out.append(np.log10(np.stack(lines, axis=-1)))
        return out


def _log_band_energy(power: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """log10 of the summed power per band; power is (batch, channels, bins)."""
    # reduceat's last segment runs to the end of the array, so cut the array at the last edge.
    sums = np.add.reduceat(power[..., : edges[-1]], edges[:-1], axis=-1)
    return np.log10(sums + _EPS)
