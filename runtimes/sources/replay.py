"""A recorded signal replayed as if a sensor were sending it, for bench tests and demos.

Opened from ``replay://run1.npz?speed=1.0&block=256&loop=false`` (a relative path is
relative to the working directory; ``replay:///abs/run1.npz`` is absolute). The ``.npz``
holds ``signal`` (n, channels) in physical units and ``sample_rate`` in Hz, as
``factoryedge.data.save_npz`` writes it. Blocks are due at real time divided by ``speed``
(0: as fast as the consumer takes them); a consumer that falls behind gets the late
blocks at once, like a sensor whose bytes queued up. Samples are read-only views.

A *snapshot* recording (an ``.npz`` with ``t_s`` and ``signal`` shaped (bursts, samples,
channels), the layout of ``femto-pronostia``, or a folder of PHM 2012 ``acc_*.csv``; see
``factoryedge.data.snapshots``) is played burst by burst at the bursts' own times divided by
``speed``, as a periodic sensor sends them: each burst's first block has ``gap=True``, so no
window spans two bursts. Its blocks' ``t_wall`` is the wall time the replay started plus
the recording's time of the block's last sample, *not* scaled by ``speed``: window times on
the device then advance like the recording's (at ``speed=1000`` a 10 s gap between bursts
is waited as 10 ms but stamped as 10 s), so periods in seconds (baselining's ``skip_s`` and
``duration_s``) mean seconds of the recording. ``t_monotonic`` stays the real arrival time.
"""
from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from factoryedge.data.snapshots import is_snapshot_source, load_snapshots
from factoryedge.errors import ConfigError, DataError
from factoryedge.runtimes import clock
from factoryedge.runtimes.contracts import UriPlugin
from factoryedge.runtimes.options import as_bool, as_float, as_int, parse_options, split_uri
from factoryedge.runtimes.sources.base import SampleBlock

OPTIONS = {
    "speed": as_float(0.0, 1.0, allow_zero=True),
    "block": as_int(1, 1 << 24, 256),
    "loop": as_bool,
}


class ReplaySource(UriPlugin):
    """Sample blocks of ``block`` samples from a recording; ``loop`` restarts it at the end.

    Each loop's first block has ``gap=True``: the recording's end does not continue into
    its start. ``seq`` is the index of the block's first sample in the recording.
    """

    RATE_BEFORE_OPEN = False  # the recording says, once loaded
    OPTIONS = OPTIONS

    def __init__(self, path: str | Path, *, speed: float = 1.0, block: int = 256, loop: bool = False) -> None:
        opts = parse_options(f"replay of {str(path)!r}", dict(speed=speed, block=block, loop=loop), OPTIONS)
        self.path = Path(path).expanduser()
        self.speed: float = opts["speed"]
        self.block: int = opts["block"]
        self.loop: bool = opts["loop"]
        self.signal: np.ndarray | None = None
        self.sample_rate: float | None = None
        self.burst_t_s: np.ndarray | None = None  # a snapshot recording's burst start times, else None
        self.t_wall0: float | None = None  # a snapshot replay: the wall time its recording time 0 is stamped as
        self.loops = 0
        self.blocks_out = 0
        self._closing = threading.Event()

    @classmethod
    def from_uri(cls, uri: str, **overrides: Any) -> ReplaySource:
        path, options = split_uri(uri, "replay")
        if not path:
            raise ConfigError(f"{uri!r} names no recording; write e.g. replay://run1.npz?speed=1.0")
        options.update(overrides)
        return cls(path, **parse_options(f"replay source {uri!r}", options, OPTIONS))

    @property
    def channels(self) -> int | None:
        return None if self.signal is None else int(self.signal.shape[1])

    @property
    def stats(self) -> dict[str, int]:
        return {"blocks": self.blocks_out, "loops": self.loops}

    def open(self) -> ReplaySource:
        """Load the recording (idempotent); DataError if it is missing or not a signal."""
        if self.signal is not None:
            return self
        p = self.path
        if is_snapshot_source(p):
            return self._open_snapshots(p)
        if not p.is_file():
            raise DataError(f"replay recording '{p}' does not exist")
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = set(z.files)
                if not {"signal", "sample_rate"} <= keys:
                    raise DataError(
                        f"replay recording '{p}' lacks {sorted({'signal', 'sample_rate'} - keys)}; it has "
                        f"{sorted(keys)}. Write it with factoryedge.data.save_npz or np.savez(signal=..., sample_rate=...)"
                    )
                signal, rate = z["signal"], z["sample_rate"]
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise DataError(f"replay recording '{p}' is not a readable .npz file: {e}") from None
        if signal.ndim == 1:
            signal = signal[:, None]
        if signal.ndim != 2 or signal.shape[0] == 0 or signal.dtype.kind not in "iuf":
            raise DataError(
                f"replay recording '{p}': signal of shape {signal.shape} and dtype {signal.dtype} "
                "must be numbers shaped (samples, channels) with at least one sample"
            )
        rate_hz = float(rate) if rate.ndim == 0 and rate.dtype.kind in "iuf" else float("nan")
        if not (np.isfinite(rate_hz) and rate_hz > 0):
            raise DataError(f"replay recording '{p}': sample_rate {rate.tolist()!r} must be a positive number of Hz")
        signal = np.ascontiguousarray(signal, dtype=np.float32)
        signal.flags.writeable = False  # blocks are views; a consumer must not edit the recording
        self.signal, self.sample_rate = signal, rate_hz
        return self

    def _open_snapshots(self, p: Path) -> ReplaySource:
        rec = load_snapshots(p, label=p.stem)
        bursts, n = rec.bursts, rec.bursts.shape[1]
        # One (bursts x samples, channels) array: blocks stay views, and seq stays the sample index.
        signal = np.ascontiguousarray(bursts.reshape(-1, bursts.shape[2]), dtype=np.float32)
        signal.flags.writeable = False
        self.burst_t_s = rec.t_s - rec.t_s[0]
        self._burst_samples = n
        self.signal, self.sample_rate = signal, rec.sample_rate
        return self

    def close(self) -> None:
        """End ``blocks()``; safe from any thread."""
        self._closing.set()

    def __enter__(self) -> ReplaySource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self) -> Iterator[SampleBlock]:
        """Blocks paced at real time / speed, until the end (or ``close()`` when looping)."""
        self.open()
        if self.burst_t_s is not None:
            yield from self._snapshot_blocks()
            return
        signal, n = self.signal, len(self.signal)
        rate = self.sample_rate * self.speed
        t0, sent, idx, gap = time.monotonic(), 0, 0, False
        while not self._closing.is_set():
            if idx >= n:
                if not self.loop:
                    return
                idx, gap = 0, True
                self.loops += 1
            end = min(idx + self.block, n)
            sent += end - idx
            if rate > 0:
                # due when its last sample would have been taken: pacing by total count, not
                # per block, so sleep jitter does not accumulate
                delay = t0 + sent / rate - time.monotonic()
                if delay > 0 and self._closing.wait(delay):
                    return
            self.blocks_out += 1
            yield SampleBlock(signal[idx:end], time.monotonic(), clock.wall(), idx, gap, 0, None, self.stats)
            idx, gap = end, False

    def _snapshot_blocks(self) -> Iterator[SampleBlock]:
        """Each burst in blocks of at most ``block`` samples; a block never spans two bursts."""
        signal, times, n, fs = self.signal, self.burst_t_s, self._burst_samples, self.sample_rate
        period = float(times[-1]) + n / fs  # a loop restarts one burst length after the last burst ends
        t0, wall0, offset = time.monotonic(), clock.wall(), 0.0
        self.t_wall0 = wall0
        while not self._closing.is_set():
            for b, tb in enumerate(times):
                for start in range(0, n, self.block):
                    end = min(start + self.block, n)
                    t_rec = offset + float(tb) + end / fs  # the recording's time of this block's last sample
                    if self.speed > 0:
                        delay = t0 + t_rec / self.speed - time.monotonic()
                        if delay > 0 and self._closing.wait(delay):
                            return
                    elif self._closing.is_set():
                        return
                    self.blocks_out += 1
                    idx = b * n
                    yield SampleBlock(signal[idx + start : idx + end], time.monotonic(), wall0 + t_rec, idx + start,
                                      start == 0, 0, None, self.stats)
            if not self.loop:
                return
            self.loops += 1
            offset += period
