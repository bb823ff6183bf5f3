"""Snapshot recordings: short bursts taken every few seconds, as periodic vibration sensors send them.

A ``SnapshotRecording`` keeps each burst apart with its start time, so windows are cut per
burst and never join the end of one burst to the start of the next (the gap between them
is minutes of unseen running). Readers:

- an ``.npz`` with ``signal`` (bursts, samples, channels), ``t_s`` (bursts,) and
  ``sample_rate`` (the layout of ``../shared/data/femto-pronostia``);
- a folder in the PHM 2012 challenge layout: ``acc_*.csv`` files, one burst each, columns
  hour, minute, second, microsecond, horizontal, vertical (comma or semicolon separated);
- the named data set ``femto-pronostia`` (six PRONOSTIA bearings run to failure).
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from factoryedge.errors import DataError
from factoryedge.features.windowing import sliding_windows, window_starts

FEMTO = "femto-pronostia"
FEMTO_RUNS = ("Bearing1_1", "Bearing1_2", "Bearing2_1", "Bearing2_2", "Bearing3_1", "Bearing3_2")
CHALLENGE_CHANNELS = ("horizontal", "vertical")
CHALLENGE_RATE = 25600.0
_DAY_S = 86400.0


@dataclass(frozen=True)
class SnapshotRecording:
    """Bursts of equal length with their start times (seconds since the first burst).

    ``bursts`` is float32 (n_bursts, burst_samples, n_channels); ``t_s`` increases strictly.
    ``meta`` carries what the source says about the run (rpm, load, repaired clocks).
    """

    bursts: np.ndarray
    t_s: np.ndarray
    sample_rate: float
    channels: tuple[str, ...]
    source: str
    label: str = "unknown"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = np.asarray(self.bursts)
        t = np.asarray(self.t_s, dtype=np.float64)
        if b.ndim != 3:
            raise DataError(f"snapshot recording {self.source!r}: bursts have shape {b.shape}; "
                            "expected (n_bursts, samples_per_burst, n_channels)")
        if len(b) == 0:
            raise DataError(f"snapshot recording {self.source!r} has no bursts")
        if t.shape != (len(b),):
            raise DataError(f"snapshot recording {self.source!r}: {len(b)} bursts but {t.shape} times; "
                            "give one start time per burst")
        if len(t) > 1 and not np.all(np.diff(t) > 0):
            i = int(np.argmin(np.diff(t)))
            raise DataError(f"snapshot recording {self.source!r}: burst {i + 1} starts at {t[i + 1]:g} s, "
                            f"not after burst {i} at {t[i]:g} s; burst times must increase")
        if not (np.isfinite(self.sample_rate) and self.sample_rate > 0):
            raise DataError(f"snapshot recording {self.source!r}: sample rate {self.sample_rate!r} is not positive")
        if len(self.channels) != b.shape[2]:
            raise DataError(f"snapshot recording {self.source!r}: {b.shape[2]} channel(s) but names "
                            f"{list(self.channels)}")
        if not np.all(np.isfinite(b)):
            raise DataError(f"snapshot recording {self.source!r}: some samples are NaN or infinite")
        object.__setattr__(self, "bursts", b.astype(np.float32, copy=False))
        object.__setattr__(self, "t_s", t)
        object.__setattr__(self, "sample_rate", float(self.sample_rate))
        object.__setattr__(self, "channels", tuple(self.channels))

    @property
    def n_bursts(self) -> int:
        return int(len(self.bursts))

    @property
    def burst_s(self) -> float:
        return self.bursts.shape[1] / self.sample_rate

    @property
    def life_s(self) -> float:
        """From the first burst's start to the last burst's end (for a run to failure: its life)."""
        return float(self.t_s[-1] - self.t_s[0]) + self.burst_s

    def windows(self, window: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(windows (k, window, channels), burst index (k,), start time s (k,)), cut burst by burst.

        Every burst gives the same windows (``sliding_windows`` of one burst); none spans two.
        """
        if self.bursts.shape[1] < window:
            raise DataError(f"{self.source}: bursts of {self.bursts.shape[1]} samples are shorter than the "
                            f"window ({window}); use a window of at most {self.bursts.shape[1]} samples")
        per = sliding_windows(self.bursts[0], window, hop).shape[0]
        offs = window_starts(self.bursts.shape[1], window, hop) / self.sample_rate
        w = np.concatenate([sliding_windows(b, window, hop) for b in self.bursts])
        burst = np.repeat(np.arange(self.n_bursts), per)
        return w, burst, self.t_s[burst] + np.tile(offs, self.n_bursts)

    def select(self, mask: np.ndarray, suffix: str) -> SnapshotRecording:
        """The bursts where ``mask`` is true, times unchanged."""
        mask = np.asarray(mask, bool)
        return SnapshotRecording(self.bursts[mask], self.t_s[mask], self.sample_rate, self.channels,
                                 f"{self.source}{suffix}", self.label, dict(self.meta))


def is_snapshot_source(path: str | os.PathLike) -> bool:
    """True for an ``.npz`` holding ``t_s`` with 3-d ``signal``, or a folder of ``acc_*.csv`` files."""
    p = Path(path)
    if p.is_dir():
        return any(p.glob("acc_*.csv"))
    if p.suffix.lower() == ".npz" and p.is_file():
        try:
            with np.load(p, allow_pickle=False) as z:
                return "t_s" in z.files
        except (OSError, ValueError, zipfile.BadZipFile):
            return False
    return False


def load_snapshots(path: str | os.PathLike, label: str = "unknown") -> SnapshotRecording:
    """A snapshot ``.npz`` or a challenge-layout folder of ``acc_*.csv``, by what ``path`` is."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"snapshot recording '{p}' does not exist; pass an .npz with signal/t_s/sample_rate "
                        "or a folder of acc_*.csv files")
    if p.is_dir():
        return _read_challenge_folder(p, label)
    if p.suffix.lower() != ".npz":
        raise DataError(f"'{p}' is not a snapshot recording; pass an .npz or a folder of acc_*.csv files")
    try:
        with np.load(p, allow_pickle=False) as z:
            content = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read snapshot NPZ '{p}': {e}") from e
    missing = [k for k in ("signal", "t_s", "sample_rate") if k not in content]
    if missing:
        raise DataError(f"snapshot NPZ '{p}' lacks {missing}; it has {sorted(content)}; "
                        "required: signal (bursts, samples, channels), t_s (bursts,), sample_rate")
    sig = content["signal"]
    if sig.ndim == 2:
        sig = sig[:, :, None]
    names = tuple(str(c) for c in np.atleast_1d(content["channels"])) if "channels" in content else \
        tuple(f"ch{i}" for i in range(sig.shape[-1]))
    meta = {k: float(content[k]) for k in ("rpm", "load_n") if k in content}
    if "t_repaired" in content:
        meta["t_repaired"] = [int(i) for i in np.atleast_1d(content["t_repaired"])]
    if "source" in content:
        meta["origin"] = str(content["source"])
    return SnapshotRecording(sig, content["t_s"], float(content["sample_rate"]), names, str(p), label, meta)


def _read_challenge_folder(p: Path, label: str) -> SnapshotRecording:
    files = sorted(p.glob("acc_*.csv"), key=lambda f: [int(x) for x in re.findall(r"\d+", f.stem)] or [0])
    if not files:
        raise DataError(f"folder '{p}' holds no acc_*.csv files (the PHM 2012 challenge layout)")
    bursts, clock = [], []
    for f in files:
        text = f.read_text()
        delim = ";" if ";" in text.split("\n", 1)[0] else ","
        try:
            rows = np.loadtxt(text.splitlines(), delimiter=delim, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataError(f"'{f}': {e}; expected 6 numeric columns: hour, minute, second, microsecond, "
                            "horizontal, vertical") from None
        if rows.shape[1] != 6:
            raise DataError(f"'{f}' has {rows.shape[1]} columns; expected 6: hour, minute, second, "
                            "microsecond, horizontal, vertical")
        bursts.append(rows[:, 4:6])
        h, m, s, us = rows[0, :4]
        clock.append(h * 3600 + m * 60 + s + us * 1e-6)
    lengths = {len(b) for b in bursts}
    if len(lengths) != 1:
        raise DataError(f"'{p}': bursts have different lengths {sorted(lengths)}; expected equal snapshots")
    t, repaired = _unwrap_clock(np.array(clock))
    meta = {"t_repaired": repaired} if repaired else {}
    return SnapshotRecording(np.stack(bursts), t, CHALLENGE_RATE, CHALLENGE_CHANNELS, str(p), label, meta)


def _unwrap_clock(clock: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Seconds since the first burst from time-of-day stamps: midnight wraps add a day; a stamp
    that still does not advance is set to the previous one plus the median interval (and listed)."""
    t = clock.copy()
    for i in range(1, len(t)):
        if t[i] <= t[i - 1] and t[i] + _DAY_S - t[i - 1] < 3600:
            t[i:] += _DAY_S
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    repaired = []
    for i in range(1, len(t)):
        if t[i] <= t[i - 1]:
            t[i] = t[i - 1] + step
            repaired.append(i)
    return t - t[0], repaired


def femto_pronostia(root: str | os.PathLike | None = None) -> list[SnapshotRecording]:
    """The six PRONOSTIA learning-set bearings, from ``root`` or ``<shared data>/femto-pronostia``."""
    from factoryedge.data.cwru import shared_data_dir

    folder = Path(root) if root is not None else shared_data_dir() / FEMTO
    if not folder.is_dir():
        raise DataError(f"data set {FEMTO} not found at '{folder}'; set FACTORYEDGE_DATA to the folder holding {FEMTO}/")
    missing = [r for r in FEMTO_RUNS if not (folder / f"{r}.npz").is_file()]
    if missing:
        raise DataError(f"'{folder}' lacks {', '.join(m + '.npz' for m in missing)} of data set {FEMTO}")
    return [load_snapshots(folder / f"{r}.npz", label=r) for r in FEMTO_RUNS]


def resolve_snapshots(args: list[str]) -> list[SnapshotRecording] | None:
    """Data arguments as snapshot recordings, or None when none of them is one.

    ``femto-pronostia`` is the named data set; ``LABEL=PATH`` (or a bare PATH) is one run, an
    ``.npz`` with ``t_s`` or a folder of ``acc_*.csv``. Mixing snapshot and continuous data is
    an error: they are judged differently (in time to failure, or by labelled windows).
    """
    found: list[SnapshotRecording] = []
    other = []
    for arg in args:
        if arg == FEMTO:
            found += femto_pronostia()
            continue
        label, _, path = arg.rpartition("=")
        if path and is_snapshot_source(path):
            found.append(load_snapshots(path, label=label or Path(path).stem))
        else:
            other.append(arg)
    if not found:
        return None
    if other:
        raise DataError(f"{other} are not snapshot recordings, but {[r.source for r in found]} are; evaluate runs to "
                        "failure (femto-pronostia, LABEL=run.npz, LABEL=folder-of-acc_*.csv) apart from other data")
    return found


def snapshots_sha256(rec: SnapshotRecording) -> str:
    """sha256 of the bursts (float32), their times and the sample rate."""
    h = hashlib.sha256(np.ascontiguousarray(rec.bursts).tobytes())
    h.update(np.ascontiguousarray(rec.t_s).tobytes())
    h.update(repr(rec.sample_rate).encode())
    return h.hexdigest()
