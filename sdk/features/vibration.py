"""Vibration preprocessing shared by training and the device: features or raw frames per window.

The spec objects are what a bundle's manifest records; the extractors are built from a spec
and are the only code that turns windows into model inputs, on both sides. Anything that
changes a feature value must change here, once.
"""
from __future__ import annotations

import threading
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from factoryedge.errors import ConfigError
from factoryedge.features.fft import ifft_into, rfft_into

TimeFeature = Literal["rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness"]
TIME_FEATURES: tuple[str, ...] = ("rms", "peak", "peak_to_peak", "crest_factor", "kurtosis", "skewness")

# SKF 6205 (the CWRU drive-end bearing) defect frequencies as multiples of shaft speed.
SKF6205_ORDERS = {"BPFI": 5.4152, "BPFO": 3.5848, "BSF": 4.7135, "FTF": 0.39828}

_EPS = 1e-12
# Windows per internal step of FeatureExtractor (see __call__).
CHUNK = 32


class _WindowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_rate: float = Field(gt=0, description="samples per second of every channel")
    channels: tuple[str, ...] = Field(min_length=1)
    window: int = Field(ge=16, description="samples per window")
    hop: int = Field(ge=1, description="samples between the starts of consecutive windows")

    @model_validator(mode="after")
    def _hop_within_window(self):
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop}) must not exceed the window ({self.window})")
        return self

    @property
    def nyquist(self) -> float:
        return self.sample_rate / 2.0


class VibrationFeatureSpec(_WindowSpec):
    """Classic condition-monitoring features per channel and window.

    Per channel: time-domain statistics; log energies of ``spectral_bands`` equal-width bands
    of the Hann-windowed power spectrum between ``spectral_fmin`` and ``spectral_fmax``; and
    log energies of ``envelope_bands`` bands of the envelope spectrum (band-pass
    ``envelope_band``, Hilbert magnitude) up to ``envelope_fmax``, where repetitive bearing
    impacts show as lines at the defect frequencies. With ``shaft_hz`` and ``defect_orders``
    the envelope amplitude at each defect frequency relative to the envelope spectrum's median
    is added. Keep ``spectral_fmax`` and ``envelope_band`` below any anti-alias cut-off the
    data went through (e.g. a decimated recording).
    """

    type: Literal["vibration_features"] = "vibration_features"
    time_features: tuple[TimeFeature, ...] = TIME_FEATURES
    spectral_bands: int = Field(16, ge=0)
    spectral_fmin: float = Field(0.0, ge=0)
    spectral_fmax: float
    envelope_band: tuple[float, float] | None
    envelope_fmax: float = Field(500.0, gt=0)
    envelope_bands: int = Field(20, ge=0)
    shaft_hz: float | None = Field(None, gt=0)
    defect_orders: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _frequencies_fit(self):
        nyq, resolution = self.nyquist, self.sample_rate / self.window
        if not (self.spectral_fmin < self.spectral_fmax <= nyq):
            raise ValueError(
                f"spectral band range {self.spectral_fmin}..{self.spectral_fmax} Hz must be "
                f"increasing and end at or below Nyquist ({nyq:g} Hz)"
            )
        if self.spectral_bands and (self.spectral_fmax - self.spectral_fmin) / self.spectral_bands < resolution:
            raise ValueError(
                f"{self.spectral_bands} spectral bands are narrower than the window's frequency "
                f"resolution ({resolution:g} Hz); use fewer bands or a longer window"
            )
        if self.envelope_band is not None:
            lo, hi = self.envelope_band
            if not (0 < lo < hi < nyq):
                raise ValueError(
                    f"envelope_band {list(self.envelope_band)} Hz must satisfy 0 < low < high < Nyquist ({nyq:g} Hz)"
                )
            if self.envelope_bands and self.envelope_fmax / self.envelope_bands < resolution:
                raise ValueError(
                    f"{self.envelope_bands} envelope bands up to {self.envelope_fmax:g} Hz are narrower "
                    f"than the window's frequency resolution ({resolution:g} Hz); use fewer bands or a longer window"
                )
        if self.defect_orders and self.shaft_hz is None:
            raise ValueError("defect_orders need shaft_hz (the shaft speed in Hz)")
        if self.defect_orders and self.envelope_band is None:
            raise ValueError("defect_orders need an envelope_band")
        return self


class VibrationFrameSpec(_WindowSpec):
    """Raw windows cut into ``window // frame`` consecutive frames, the input of a recurrent model.

    ``representation`` "samples" feeds the frames' samples as they are; "log_spectrum" feeds
    each frame's Hann-windowed log power in ``bands`` equal-width bands up to ``fmax`` (a
    short-time spectrogram), which a small recurrent model can learn from at high sample
    rates where raw samples look like noise from frame to frame.
    """

    type: Literal["vibration_frames"] = "vibration_frames"
    frame: int = Field(ge=1)
    representation: Literal["samples", "log_spectrum"] = "samples"
    bands: int = Field(32, ge=1)
    fmax: float | None = None

    @model_validator(mode="after")
    def _frames_divide_window(self):
        if self.window % self.frame:
            raise ValueError(f"frame ({self.frame}) must divide the window ({self.window}) evenly")
        if self.representation == "log_spectrum":
            fmax = self.fmax or self.nyquist
            if not 0 < fmax <= self.nyquist:
                raise ValueError(f"fmax {fmax:g} Hz must lie in (0, Nyquist = {self.nyquist:g} Hz]")
            if fmax / self.bands < self.sample_rate / self.frame:
                raise ValueError(
                    f"{self.bands} bands up to {fmax:g} Hz are narrower than a {self.frame}-sample frame "
                    f"resolves ({self.sample_rate / self.frame:g} Hz); use fewer bands or longer frames"
                )
        return self


def default_feature_spec(
    sample_rate: float,
    channels: tuple[str, ...] = ("ch0",),
    window: int | None = None,
    hop: int | None = None,
    max_frequency: float | None = None,
    shaft_hz: float | None = None,
    defect_orders: dict[str, float] | None = None,
) -> VibrationFeatureSpec:
    """A sound starting point: ~85 ms windows, bands up to ``max_frequency`` (default 0.45 fs).

    The envelope band sits in the upper part of the usable range, where bearing impacts
    excite structural resonances and shaft harmonics have died out.
    """
    fmax = min(max_frequency or 0.45 * sample_rate, 0.45 * sample_rate)
    if window is None:
        window = int(2 ** round(np.log2(sample_rate * 0.085)))
    hop = hop or window // 4
    env_hi = 0.95 * fmax
    env_lo = max(env_hi * 0.35, 500.0) if env_hi > 1000 else env_hi * 0.3
    return VibrationFeatureSpec(
        sample_rate=sample_rate,
        channels=tuple(channels),
        window=window,
        hop=hop,
        spectral_fmax=fmax,
        envelope_band=(round(env_lo, 1), round(env_hi, 1)),
        shaft_hz=shaft_hz,
        defect_orders=defect_orders or {},
    )


def _band_edges(freqs: np.ndarray, fmin: float, fmax: float, n: int) -> np.ndarray:
    """Bin indices of ``n`` equal-width bands; each band holds at least one bin."""
    idx = np.searchsorted(freqs, np.linspace(fmin, fmax, n + 1))
    for i in range(1, n + 1):
        idx[i] = max(idx[i], idx[i - 1] + 1)
    return idx


class FeatureExtractor:
    """Windows (batch, window, channels) to float32 features (batch, n_features).

    Filters, band edges and tapers are built once here, so the per-call cost is four
    float32 FFTs (``scipy.fft``) per channel over the batch, in chunks of ``CHUNK`` windows:
    the tapered window for the band energies, the raw window for the envelope band, the
    analytic signal's inverse (complex, so worth two real ones), and the envelope spectrum.
    Around them every step is one pass over memory: band energies are summed from the
    spectrum's float pairs in place, and of the envelope spectrum only the low bins that
    features read are taken further. ``workers`` is scipy.fft's thread
    count, for a device with cores to spare.

    The analytic signal stays full length on purpose: computing the envelope on a window
    shortened to the band's width (it is only read up to ``envelope_fmax``) was measured on
    CWRU windows to change envelope band energies by up to 0.09 in log10, because taking
    the magnitude spreads energy that the shorter transform aliases.
    """

    def __init__(self, spec: VibrationFeatureSpec, workers: int = 1):
        self.spec = spec
        self.workers = int(workers)
        self._local = threading.local()  # per-thread work buffers (see _buffers)
        w = spec.window
        self._taper = np.hanning(w).astype(np.float32)
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
            # Only the envelope spectrum's low bins are read (bands, median floor, defect lines).
            self._env_stop = max([int(self._env_edges[-1]), self._env_median_stop,
                                  *(hi for _, hi in self._defect_bins)])
            # the envelope's mean comes off these few bins, not the whole envelope (see below)
            self._taper_spectrum = np.fft.rfft(np.hanning(w))[: self._env_stop].astype(np.complex64)
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
        _check_windows(windows, self.spec)
        if len(windows) <= CHUNK:
            return self._extract(windows)
        # Chunks keep the FFTs' working arrays in cache and reuse the allocator's memory:
        # one 256-window call was measured 1.5x slower per window than eight of 32.
        out = np.empty((len(windows), self.n_features), dtype=np.float32)
        for i in range(0, len(windows), CHUNK):
            out[i : i + CHUNK] = self._extract(windows[i : i + CHUNK])
        return out

    def _buffers(self, batch: int) -> dict[str, np.ndarray]:
        """This thread's work arrays for ``batch`` windows (at least ``CHUNK``), reused from call to call.

        Fresh arrays of this size cost page faults whenever the allocator has returned
        memory to the system between calls; reuse makes the cost the same on every call.
        Per thread, so one extractor may serve several threads.
        """
        ws = getattr(self._local, "ws", None)
        if ws is None or len(ws["x"]) < batch:
            shape = (max(batch, CHUNK), len(self.spec.channels), self.spec.window)
            bins = (*shape[:2], shape[2] // 2 + 1)
            ws = {"x": np.empty(shape, np.float32), "tmp": np.empty(shape, np.float32),
                  "spectrum": np.empty(bins, np.complex64)}
            if self._envelope_bins is not None:
                # the analytic signal's spectrum: the band at the front, zeros behind it for good
                ws["band"] = np.zeros(shape, np.complex64)
                ws["analytic"] = np.empty(shape, np.complex64)
            self._local.ws = ws
        return {name: a[:batch] for name, a in ws.items()}

    def _extract(self, windows: np.ndarray) -> np.ndarray:
        s = self.spec
        ws = self._buffers(len(windows))
        # One copy: float32, channel-major (batch, channels, time), so every FFT and
        # reduction runs over contiguous memory.
        x = ws["x"]
        np.copyto(x, np.swapaxes(windows, 1, 2), casting="same_kind")
        x -= np.add.reduce(x, axis=-1, keepdims=True) / x.shape[-1]  # the mean, without ndarray.mean's overhead
        parts = [self._time_features(x, ws["tmp"])]
        if s.spectral_bands:
            spectrum = rfft_into(np.multiply(x, self._taper, out=ws["tmp"]), ws["spectrum"], self.workers)
            parts.append(_log_band_energy_of_spectrum(spectrum, self._spec_edges))
        if self._envelope_bins is not None:
            parts.extend(self._envelope_features(x, ws))
        return np.concatenate(parts, axis=-1).reshape(len(x), -1).astype(np.float32, copy=False)

    def _time_features(self, x: np.ndarray, x2: np.ndarray) -> np.ndarray:
        n = x.shape[-1]
        np.multiply(x, x, out=x2)
        m2 = x2.sum(axis=-1) / n
        rms = np.sqrt(m2)
        hi, low = x.max(axis=-1), x.min(axis=-1)
        peak = np.maximum(hi, -low)
        # The third and fourth moments as batched dot products (matmul), in one pass each.
        rows = x2[..., None, :]
        m3 = np.matmul(rows, x[..., :, None])[..., 0, 0] / n
        m4 = np.matmul(rows, x2[..., :, None])[..., 0, 0] / n
        values = {
            "rms": rms,
            "peak": peak,
            "peak_to_peak": hi - low,
            "crest_factor": peak / (rms + _EPS),
            # Pearson kurtosis (3 for Gaussian noise): impacts from a bearing defect raise it.
            "kurtosis": m4 / (m2 * m2 + _EPS),
            "skewness": m3 / (m2 * rms + _EPS),
        }
        return np.stack([values[name] for name in self.spec.time_features], axis=-1)

    def _envelope_features(self, x: np.ndarray, ws: dict[str, np.ndarray]) -> list[np.ndarray]:
        # Analytic signal of the band-passed window: the band's positive frequencies, doubled,
        # shifted to baseband (the magnitude does not change) and inverted.
        lo, hi = self._envelope_bins
        spectrum = rfft_into(x, ws["spectrum"], self.workers)
        np.multiply(spectrum[..., lo:hi], 2.0, out=ws["band"][..., : hi - lo])
        envelope = np.abs(ifft_into(ws["band"], ws["analytic"], self.workers), out=ws["tmp"])
        mean = np.add.reduce(envelope, axis=-1, keepdims=True) / envelope.shape[-1]
        envelope *= self._taper
        # rfft((e - mean) * taper) = rfft(e * taper) - mean * rfft(taper), on the bins read
        low = rfft_into(envelope, ws["spectrum"], self.workers)[..., : self._env_stop]
        spectrum = np.abs(low - mean * self._taper_spectrum)
        out = []
        if self.spec.envelope_bands:
            out.append(_log_band_energy(spectrum * spectrum, self._env_edges))
        if self._defect_bins:
            floor = np.median(spectrum[..., 1 : self._env_median_stop], axis=-1) + _EPS
            lines = [spectrum[..., lo:hi].max(axis=-1) / floor for lo, hi in self._defect_bins]
            out.append(np.log10(np.stack(lines, axis=-1)))
        return out


def _log_band_energy_of_spectrum(spectrum: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``_log_band_energy`` of |X|^2, summing re^2 + im^2 in place over the spectrum's float pairs.

    Overwrites ``spectrum`` (complex64, bins last, C-contiguous): no power array is built.
    """
    pairs = spectrum.view(np.float32)[..., : 2 * edges[-1]]  # re, im interleaved: bin k is floats 2k, 2k+1
    np.square(pairs, out=pairs)
    return _log_band_energy(pairs, 2 * edges)


def _check_windows(windows: np.ndarray, s: _WindowSpec) -> None:
    if windows.ndim != 3 or windows.shape[1] != s.window or windows.shape[2] != len(s.channels):
        raise ConfigError(
            f"windows of shape {windows.shape} do not match the spec: expected "
            f"(batch, {s.window}, {len(s.channels)}) for channels {list(s.channels)}"
        )


def _log_band_energy(power: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """log10 of the summed power per band; power is (batch, channels, bins)."""
    # reduceat's last segment runs to the end of the array, so cut the array at the last edge.
    sums = np.add.reduceat(power[..., : edges[-1]], edges[:-1], axis=-1)
    return np.log10(sums + _EPS)


class FrameExtractor:
    """Windows (batch, window, channels) to float32 sequences (batch, steps, per-step values).

    Only the window mean is removed; amplitude scaling belongs to the model, whose graph
    carries the training statistics, so the device cannot apply different ones.
    """

    def __init__(self, spec: VibrationFrameSpec):
        self.spec = spec
        self.steps = spec.window // spec.frame
        self.names = [f"step{i:03d}" for i in range(self.steps)]
        if spec.representation == "log_spectrum":
            freqs = np.fft.rfftfreq(spec.frame, 1.0 / spec.sample_rate)
            self._edges = _band_edges(freqs, 0.0, spec.fmax or spec.nyquist, spec.bands)
            self._taper = np.hanning(spec.frame)

    @property
    def n_features(self) -> int:
        per_channel = self.spec.bands if self.spec.representation == "log_spectrum" else self.spec.frame
        return per_channel * len(self.spec.channels)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        s = self.spec
        _check_windows(windows, s)
        x = windows.astype(np.float32)
        x = x - x.mean(axis=1, keepdims=True)
        if s.representation == "samples":
            return x.reshape(len(x), self.steps, s.frame * len(s.channels))
        # (batch, steps, frame, channels) -> (batch, steps, channels, frame) for contiguous FFTs
        frames = np.ascontiguousarray(x.reshape(len(x), self.steps, s.frame, -1).transpose(0, 1, 3, 2))
        power = np.abs(np.fft.rfft(frames * self._taper, axis=-1)) ** 2
        bands = _log_band_energy(power, self._edges)
        return bands.reshape(len(x), self.steps, -1).astype(np.float32)
