"""A physically modelled rolling-bearing vibration simulator, for the demo and for tests.

The model is the one used in the bearing-diagnostics literature (McFadden and Smith 1984,
Randall and Antoni 2011): a localised defect strikes a mating surface once per defect period,
each strike rings a lightly damped structural resonance, and the strike amplitude is modulated
by the load the defect carries as it moves through the load zone. On top sit shaft harmonics,
resonance-band "roughness" from healthy rolling contact, optional electrical or gear tones and
sensor noise. Everything is vectorised: no per-sample Python loop.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from factoryedge.data.recording import Recording
from factoryedge.errors import ConfigError

FAULTS = ("outer_race", "inner_race", "ball")

# Per-axis couplings of a 3-axis sensor on a bearing housing: the radial axis in the load
# direction sees the most impact energy, the other radial axis less, the axial axis least;
# each axis reaches the sensor through a slightly different structural path (resonance).
_AXIS_NAMES = ("x", "y", "z")
_AXIS_IMPACT_GAIN = (1.0, 0.55, 0.3)
_AXIS_SHAFT_GAIN = (1.0, 0.8, 0.25)
_AXIS_SHAFT_PHASE = (0.0, math.pi / 2, 0.3)  # x and y see the shaft orbit a quarter turn apart
_AXIS_RESONANCE_SCALE = (1.0, 1.13, 0.87)

_DAMPING_RATIO = 0.05  # typical of a bolted housing; rings ~1 ms at 3 kHz
_IMPACT_PEAK_G = 0.8  # strike amplitude at severity 1, before the load-zone modulation
_ROUGHNESS_RMS_G = 0.02  # healthy rolling contact still excites the resonance a little


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry; defaults are the SKF 6205 of the CWRU test rig.

    Diameters may be in any unit (only their ratio matters). The defect frequencies are
    returned as orders, i.e. multiples of the shaft rotation frequency, with a stationary
    outer race. ``bsf`` follows the CWRU and SKF tables: it is the rate at which a ball defect
    strikes a race (twice the ball's own spin rate, since the defect touches both races per
    revolution of the ball); ``ball_spin`` is the spin rate itself.
    """

    n_balls: int = 9
    ball_diameter: float = 0.3126
    pitch_diameter: float = 1.537
    contact_angle_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.n_balls < 1:
            raise ConfigError(f"n_balls={self.n_balls!r}: a bearing needs at least one rolling element")
        if not (0 < self.ball_diameter < self.pitch_diameter):
            raise ConfigError(
                f"ball_diameter={self.ball_diameter!r}, pitch_diameter={self.pitch_diameter!r}: "
                "need 0 < ball diameter < pitch diameter"
            )
        if not (0 <= self.contact_angle_deg < 90):
            raise ConfigError(f"contact_angle_deg={self.contact_angle_deg!r}: must be in [0, 90)")

    @property
    def _ratio(self) -> float:
        return self.ball_diameter / self.pitch_diameter * math.cos(math.radians(self.contact_angle_deg))

    def bpfo(self) -> float:
        """Ball pass frequency, outer race, in orders of shaft speed."""
        return self.n_balls / 2 * (1 - self._ratio)

    def bpfi(self) -> float:
        """Ball pass frequency, inner race, in orders of shaft speed."""
        return self.n_balls / 2 * (1 + self._ratio)

    def ftf(self) -> float:
        """Fundamental train (cage) frequency, in orders of shaft speed."""
        return 0.5 * (1 - self._ratio)

    def ball_spin(self) -> float:
        """Spin rate of a ball about its own axis, in orders of shaft speed."""
        return self.pitch_diameter / (2 * self.ball_diameter) * (1 - self._ratio**2)

    def bsf(self) -> float:
        """Ball defect frequency as tabulated by CWRU/SKF (2 x ball spin), in orders."""
        return 2 * self.ball_spin()

    def orders(self) -> dict[str, float]:
        """All four defect orders, keyed as in ``features.vibration.SKF6205_ORDERS``."""
        return {"BPFI": self.bpfi(), "BPFO": self.bpfo(), "BSF": self.bsf(), "FTF": self.ftf()}

    def frequencies_hz(self, rpm: float) -> dict[str, float]:
        """The defect frequencies in Hz at a shaft speed in rpm."""
        return {k: v * rpm / 60.0 for k, v in self.orders().items()}


SKF_6205 = BearingGeometry()


def simulate_bearing(
    duration_s: float,
    sample_rate: float = 12000.0,
    rpm: float = 1797.0,
    fault: str | None = None,
    fault_onset_s: float | None = None,
    severity: float = 1.0,
    growth_s: float | None = None,
    n_channels: int = 1,
    noise_rms: float = 0.03,
    resonance_hz: float | None = None,
    seed: int = 0,
    geometry: BearingGeometry = SKF_6205,
    slip: float = 0.01,
    tones: Sequence[tuple[float, float]] = (),
) -> Recording:
    """Accelerometer signal (in g) of a bearing on a shaft turning at ``rpm``, healthy or faulty.

    ``fault`` is None (healthy), "outer_race", "inner_race" or "ball". The fault starts at
    ``fault_onset_s`` (default 0: faulty from the start) and its strike amplitude ramps linearly
    from 0 to ``severity`` over ``growth_s`` seconds (None: full severity at onset). Strikes
    come at the defect frequency with a random ``slip`` (relative std of each interval, real
    bearings slip 1-2 %); inner-race strikes are modulated at shaft speed and ball strikes at
    cage speed as the defect passes through the load zone. ``n_channels`` is 1 (channel "x") or
    3 ("x", "y", "z", different couplings per axis). ``resonance_hz`` defaults to fs/4 capped at
    8 kHz. ``tones`` adds (frequency Hz, amplitude g) sinusoids such as line or gear-mesh tones.

    Deterministic for a seed, and the healthy part does not depend on the fault: a faulty
    recording equals the healthy one with the same seed up to ``fault_onset_s``.
    """
    # Imported here: importing scipy.signal breaks where torch is blocked as sys.modules["torch"] = None
    # (scipy's array-API layer probes torch at import), which the device import-boundary test does.
    from scipy.signal import oaconvolve

    fs = float(sample_rate)
    resonance = _check_args(duration_s, fs, rpm, fault, fault_onset_s, severity, growth_s,
                            n_channels, noise_rms, resonance_hz, slip, tones)
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    shaft_hz = rpm / 60.0
    # Independent streams, so adding a fault leaves the healthy components bit-identical.
    base_ss, fault_ss = np.random.SeedSequence(seed).spawn(2)
    base_rng, fault_rng = np.random.default_rng(base_ss), np.random.default_rng(fault_ss)

    onset = None
    strikes = None
    if fault is not None:
        onset = 0.0 if fault_onset_s is None else float(fault_onset_s)
        strikes = _strikes(fault, onset, duration_s, shaft_hz, geometry, severity, growth_s, slip, fault_rng)

    phases = base_rng.uniform(0, 2 * np.pi, size=2 + len(tones))
    # 1x from residual imbalance, 2x from slight misalignment: every real machine has both.
    amp_1x, amp_2x = 0.05, 0.02
    # sin/cos of the shaft angle once; every harmonic and axis phase follows by identities,
    # because transcendental calls dominate the cost at long durations.
    s1, c1 = np.sin(2 * np.pi * shaft_hz * t), np.cos(2 * np.pi * shaft_hz * t)
    s2, c2 = 2 * s1 * c1, c1 * c1 - s1 * s1
    signal = np.empty((n, n_channels))
    for ch in range(n_channels):
        kernel = _resonance_kernel(resonance * _AXIS_RESONANCE_SCALE[ch], fs)
        roughness = base_rng.standard_normal(n) * (_ROUGHNESS_RMS_G / _kernel_rms_gain(kernel))
        excitation = roughness
        if strikes is not None:
            excitation = roughness + _impulse_train(strikes[0], strikes[1] * _AXIS_IMPACT_GAIN[ch], fs, n)
        x = oaconvolve(excitation, kernel)[:n]
        g, p = _AXIS_SHAFT_GAIN[ch], _AXIS_SHAFT_PHASE[ch]
        a1, a2 = phases[0] + p, phases[1] + 2 * p
        x += (g * amp_1x * math.cos(a1)) * s1 + (g * amp_1x * math.sin(a1)) * c1
        x += (g * amp_2x * math.cos(a2)) * s2 + (g * amp_2x * math.sin(a2)) * c2
        for (f_tone, a_tone), ph in zip(tones, phases[2:]):
            x += a_tone * np.sin(2 * np.pi * f_tone * t + ph)
        x += base_rng.standard_normal(n) * noise_rms
        signal[:, ch] = x

    label = fault if fault is not None else "normal"
    return Recording(
        signal=signal,
        sample_rate=fs,
        channels=_AXIS_NAMES[:n_channels],
        source=f"simulated:{label}:seed={seed}",
        label=label,
        fault_onset_s=onset,
        meta={
            "simulated": True,
            "rpm": float(rpm),
            "fault": fault,
            "severity": float(severity) if fault else 0.0,
            "growth_s": growth_s,
            "defect_hz": _defect_orders(fault, geometry) * shaft_hz if fault else None,
            "resonance_hz": resonance,
            "noise_rms": noise_rms,
            "slip": slip,
            "seed": seed,
            "geometry": asdict(geometry),
        },
    )


def _check_args(duration_s, fs, rpm, fault, onset, severity, growth_s, n_channels, noise_rms,
                resonance_hz, slip, tones) -> float:
    """Validate the arguments and return the resonance frequency to use."""
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"duration_s={duration_s!r}: must be a positive number of seconds")
    if not (np.isfinite(fs) and fs > 0):
        raise ConfigError(f"sample_rate={fs!r}: must be a positive number of Hz")
    if not (np.isfinite(rpm) and rpm > 0):
        raise ConfigError(f"rpm={rpm!r}: must be a positive shaft speed")
    if fault is not None and fault not in FAULTS:
        raise ConfigError(f"fault={fault!r}: must be None (healthy) or one of {list(FAULTS)}")
    if fault is None and onset is not None:
        raise ConfigError(f"fault_onset_s={onset!r} given without a fault; fault must then be one of {list(FAULTS)}")
    if onset is not None and not (0 <= onset <= duration_s):
        raise ConfigError(f"fault_onset_s={onset!r}: must lie within the recording, 0..{duration_s} s")
    if not (np.isfinite(severity) and severity >= 0):
        raise ConfigError(f"severity={severity!r}: must be a non-negative number (1.0 = nominal fault)")
    if growth_s is not None and not (np.isfinite(growth_s) and growth_s > 0):
        raise ConfigError(f"growth_s={growth_s!r}: must be None (sudden fault) or a positive number of seconds")
    if n_channels not in (1, 3):
        raise ConfigError(f"n_channels={n_channels!r}: must be 1 (single axis) or 3 (x, y, z sensor)")
    if not (np.isfinite(noise_rms) and noise_rms >= 0):
        raise ConfigError(f"noise_rms={noise_rms!r}: must be a non-negative number of g")
    if not (0 <= slip < 0.2):
        raise ConfigError(f"slip={slip!r}: must be in [0, 0.2); real bearings slip 0.01-0.02")
    resonance = min(fs / 4, 8000.0) if resonance_hz is None else float(resonance_hz)
    # The highest axis resonance must stay clear of Nyquist or its ringing aliases.
    spread = max(_AXIS_RESONANCE_SCALE[:n_channels])
    if not (resonance > 0 and resonance * spread < 0.45 * fs):
        raise ConfigError(
            f"resonance_hz={resonance_hz!r} at sample_rate={fs:g} Hz: must be positive and, with the "
            f"per-axis spread, below 0.45 x fs = {0.45 * fs:g} Hz (so at most {0.45 * fs / spread:g} Hz)"
        )
    for f_tone, _a in tones:
        if not (0 < f_tone < fs / 2):
            raise ConfigError(f"tone at {f_tone!r} Hz: must be between 0 and Nyquist ({fs / 2:g} Hz)")
    return resonance


def _defect_orders(fault: str, geometry: BearingGeometry) -> float:
    return {"outer_race": geometry.bpfo(), "inner_race": geometry.bpfi(), "ball": geometry.bsf()}[fault]


def _strikes(fault, onset, duration_s, shaft_hz, geometry, severity, growth_s, slip, rng):
    """Strike times (s) and amplitudes (g) of a defect from onset to the end of the recording."""
    period = 1.0 / (_defect_orders(fault, geometry) * shaft_hz)
    # Enough strikes that the jittered train outlasts the recording by many standard deviations.
    n_max = int(math.ceil((duration_s - onset) / period * (1 + 10 * slip))) + 10
    # Slip jitters each interval independently, so the timing error wanders like a real bearing's.
    intervals = period * (1 + slip * rng.standard_normal(n_max)).clip(0.5, None)
    times = onset + rng.uniform(0, period) + np.concatenate(([0.0], np.cumsum(intervals[:-1])))
    times = times[times < duration_s]

    if fault == "inner_race":
        # The defect rotates with the shaft and carries load only while inside the load zone.
        load = _load_zone(2 * np.pi * shaft_hz * times + rng.uniform(0, 2 * np.pi))
    elif fault == "ball":
        # The ball travels with the cage, through the load zone once per cage revolution.
        load = _load_zone(2 * np.pi * geometry.ftf() * shaft_hz * times + rng.uniform(0, 2 * np.pi))
    else:
        load = np.ones_like(times)  # a fixed outer-race defect stays where it is loaded
    growth = np.ones_like(times) if growth_s is None else np.clip((times - onset) / growth_s, 0.0, 1.0)
    # Real strikes vary in strength from one to the next (surface, lubricant film).
    scatter = 1 + 0.1 * rng.standard_normal(times.size)
    return times, _IMPACT_PEAK_G * severity * load * growth * scatter


def _load_zone(angle: np.ndarray) -> np.ndarray:
    """Relative load on a rolling element at an angle from the load direction (Stribeck-like)."""
    return 0.2 + 0.8 * np.clip(np.cos(angle), 0.0, None) ** 1.5


def _impulse_train(times: np.ndarray, amps: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Unit impulses at arbitrary times, split linearly between the two nearest samples."""
    pos = times * fs
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    idx = np.concatenate((i0, i0 + 1))
    w = np.concatenate((amps * (1 - frac), amps * frac))
    keep = (idx >= 0) & (idx < n)
    return np.bincount(idx[keep], weights=w[keep], minlength=n)[:n]


def _resonance_kernel(f_n: float, fs: float) -> np.ndarray:
    """Impulse response of a damped structural resonance at f_n Hz, peak-normalised to 1."""
    sigma = _DAMPING_RATIO * 2 * np.pi * f_n
    length = int(math.ceil(7.0 / sigma * fs)) + 1  # down to exp(-7) ~ 0.1 %
    tk = np.arange(length) / fs
    k = np.exp(-sigma * tk) * np.sin(2 * np.pi * f_n * math.sqrt(1 - _DAMPING_RATIO**2) * tk)
    return k / np.max(np.abs(k))


def _kernel_rms_gain(kernel: np.ndarray) -> float:
    """RMS of unit white noise after filtering with the kernel."""
    return float(np.sqrt(np.sum(kernel**2)))
