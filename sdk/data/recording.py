"""A vibration recording: samples plus the sample rate they were taken at, never one without the other."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from factoryedge.errors import DataError


@dataclass(frozen=True)
class Recording:
    """Samples of one or more channels at a known sample rate.

    ``signal`` is float64 of shape (n_samples, n_channels). ``label`` is "normal" for a
    healthy machine or the fault class (e.g. "inner_race"); "unknown" when not known.
    ``fault_onset_s`` marks where a fault starts inside the recording, if it is known.
    """

    signal: np.ndarray
    sample_rate: float
    channels: tuple[str, ...]
    source: str
    label: str = "unknown"
    fault_onset_s: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        sig = np.asarray(self.signal, dtype=np.float64)
        if sig.ndim == 1:
            sig = sig[:, None]
        if sig.ndim != 2:
            raise DataError(
                f"recording {self.source!r}: signal has shape {sig.shape}; "
                "expected (n_samples,) or (n_samples, n_channels)"
            )
        if not (np.isfinite(self.sample_rate) and self.sample_rate > 0):
            raise DataError(
                f"recording {self.source!r}: sample rate {self.sample_rate!r} Hz is not a positive number"
            )
        if len(self.channels) != sig.shape[1]:
            raise DataError(
                f"recording {self.source!r}: {sig.shape[1]} channel(s) in the signal but "
                f"{len(self.channels)} channel name(s) {list(self.channels)}"
            )
        if not np.all(np.isfinite(sig)):
            bad = int(np.count_nonzero(~np.isfinite(sig)))
            raise DataError(f"recording {self.source!r}: {bad} sample(s) are NaN or infinite")
        object.__setattr__(self, "signal", sig)
        object.__setattr__(self, "sample_rate", float(self.sample_rate))
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate

    def slice_fraction(self, start: float, stop: float) -> Recording:
        """The part between two fractions of the duration (0..1), e.g. (0.0, 0.6) for a training split."""
        if not (0.0 <= start < stop <= 1.0):
            raise DataError(f"fractions must satisfy 0 <= start < stop <= 1, got {start}, {stop}")
        i0, i1 = int(round(start * self.n_samples)), int(round(stop * self.n_samples))
        onset = None
        if self.fault_onset_s is not None:
            onset = max(0.0, self.fault_onset_s - i0 / self.sample_rate)
        return replace(
            self,
            signal=self.signal[i0:i1],
            source=f"{self.source}[{start:g}:{stop:g}]",
            fault_onset_s=onset,
        )

    def select_channels(self, names: list[str] | tuple[str, ...]) -> Recording:
        """A recording with only the named channels, in the given order."""
        missing = [n for n in names if n not in self.channels]
        if missing:
            raise DataError(
                f"recording {self.source!r} has no channel(s) {missing}; it has {list(self.channels)}"
            )
        idx = [self.channels.index(n) for n in names]
        return replace(self, signal=self.signal[:, idx], channels=tuple(names))
