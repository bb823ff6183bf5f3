"""Per-machine baselining: adapt one model's threshold to each machine it is installed on.

In calibrate mode the device collects the anomaly scores of its first minutes of running
(assumed healthy: commissioning, or right after maintenance) and applies the same rule the
training used (``factoryedge.scoring``) to set this machine's threshold. The result is
persisted atomically and tied to the model by its sha256, so a new model never inherits a
threshold calibrated for another.

Time is *recording time*: measured by the windows' end times (which a snapshot sensor's
bursts carry across the gaps between them) and by the stream the windows cover (count x
hop), whichever says more; for a continuous real-time stream the two agree, for a replay
faster than real time the count does, and for periodic snapshots the end times do. A run-in
``skip_s`` is measured the same way from the first window after ``start()``: its windows
are scored but neither learned from nor allowed to raise events; learning then lasts
``min_windows`` windows or ``min_windows x hop_s`` seconds of window end times.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from factoryedge.bundle import Bundle
from factoryedge.errors import ConfigError
from factoryedge.manifest import ScoreStats, ThresholdRule
from factoryedge.scoring import MIN_CALIBRATION_WINDOWS, calibrate_threshold

log = logging.getLogger(__name__)


class BaselineState(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    machine: str
    model_name: str
    model_version: str
    model_sha256: str
    threshold: float
    bundle_threshold: float
    rule: ThresholdRule
    stats: ScoreStats
    windows: int
    created_utc: str


class Baseliner:
    """Skips ``skip_s`` of run-in, collects scores for ``min_windows`` windows (or as many
    seconds of window end times, given ``hop_s``), then sets and persists the threshold.

    ``hop_s`` is the stream time one window adds (hop / sample rate); without it only
    counts and ``skip_s`` by end times measure time.
    """

    def __init__(self, state_path: str | Path, bundle: Bundle, machine: str, min_windows: int, *,
                 hop_s: float | None = None, skip_s: float = 0.0):
        if min_windows < MIN_CALIBRATION_WINDOWS:
            raise ConfigError(
                f"baselining needs at least {MIN_CALIBRATION_WINDOWS} windows, got {min_windows}; "
                "raise scoring.baseline.duration_s"
            )
        self.path = Path(state_path)
        self.bundle = bundle
        self.machine = machine
        if not (np.isfinite(skip_s) and skip_s >= 0):
            raise ConfigError(f"baselining skip_s={skip_s!r} must be a number of seconds >= 0")
        self.min_windows = min_windows
        self.hop_s = hop_s
        self.skip_s = float(skip_s)
        self._scores: list[np.ndarray] = []
        self._count = 0
        self.collecting = False
        self.skipped = 0  # windows of the run-in skip so far
        self.skipped_last = 0  # how many leading windows of the last add() fell in the skip
        self._first_end: float | None = None  # end time of the first window after start()
        self._learn_first_end: float | None = None

    @property
    def skipping(self) -> bool:
        """Still in the run-in skip: scores are neither learned nor debounced."""
        return self.collecting and self._learn_first_end is None and self.skip_s > 0

    @property
    def duration_s(self) -> float | None:
        return None if self.hop_s is None else self.min_windows * self.hop_s

    def _elapsed(self, count: int, first_end: float | None, end: float | None) -> float:
        """Recording seconds covered: by end times or by count x hop, whichever says more."""
        by_time = 0.0 if first_end is None or end is None else end - first_end
        return max(by_time, count * (self.hop_s or 0.0))

    @property
    def model_sha256(self) -> str:
        return self.bundle.manifest.artefacts[self.bundle.manifest.model.file]

    def load(self) -> BaselineState | None:
        """The persisted baseline for this machine and model, if there is one."""
        if not self.path.is_file():
            return None
        try:
            state = BaselineState.model_validate_json(self.path.read_text(encoding="utf-8"))
        except (ValidationError, UnicodeDecodeError, ValueError) as e:
            log.error("baseline file %s is unreadable (%s); using the bundle's threshold until re-calibrated", self.path, e)
            return None
        if state.model_sha256 != self.model_sha256 or state.machine != self.machine:
            log.warning(
                "baseline file %s belongs to %s / model %s %s; ignoring it for %s / model %s %s",
                self.path, state.machine, state.model_name, state.model_version,
                self.machine, self.bundle.manifest.name, self.bundle.manifest.version,
            )
            return None
        return state

    def start(self) -> None:
        """Begin (or restart) collecting normal scores."""
        self._scores, self._count, self.collecting = [], 0, True
        self.skipped, self.skipped_last, self._first_end, self._learn_first_end = 0, 0, None, None
        log.info("baselining %s: skipping %g s of run-in, then learning from %d windows%s of normal running",
                 self.machine, self.skip_s, self.min_windows,
                 f" or {self.duration_s:g} s" if self.duration_s is not None else "")

    def add(self, scores: np.ndarray, ends: np.ndarray | None = None) -> BaselineState | None:
        """Add window scores (with their end times, seconds); returns the new state once enough
        were collected. ``skipped_last`` then says how many leading ones fell in the run-in skip."""
        self.skipped_last = 0
        if not self.collecting:
            return None
        scores = np.asarray(scores, dtype=np.float64)
        ends = None if ends is None else np.asarray(ends, dtype=np.float64)
        if self._learn_first_end is None and self.skip_s > 0:
            k = self._skip_prefix(scores, ends)
            self.skipped_last, self.skipped = k, self.skipped + k
            scores, ends = scores[k:], None if ends is None else ends[k:]
            if len(scores):
                log.info("baselining %s: run-in skipped (%d windows), learning now", self.machine, self.skipped)
        if not len(scores):
            return None
        if self._learn_first_end is None:
            self._learn_first_end = float(ends[0]) if ends is not None else float("nan")
        self._scores.append(scores)
        self._count += len(scores)
        last = None if ends is None or np.isnan(self._learn_first_end) else float(ends[-1])
        first = None if last is None else self._learn_first_end
        done_by_time = self.duration_s is not None and self._elapsed(0, first, last) >= self.duration_s
        if self._count < self.min_windows and not (done_by_time and self._count >= MIN_CALIBRATION_WINDOWS):
            return None
        self.collecting = False
        m = self.bundle.manifest
        threshold, stats = calibrate_threshold(np.concatenate(self._scores), m.score.rule)
        state = BaselineState(
            machine=self.machine, model_name=m.name, model_version=m.version, model_sha256=self.model_sha256,
            threshold=threshold, bundle_threshold=m.score.threshold, rule=m.score.rule, stats=stats,
            windows=stats.n, created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        self._persist(state)
        log.info("baseline for %s: threshold %.4g (bundle's %.4g) from %d windows",
                 self.machine, threshold, m.score.threshold, stats.n)
        return state

    def _skip_prefix(self, scores: np.ndarray, ends: np.ndarray | None) -> int:
        """How many leading windows of this batch still fall in the run-in skip."""
        if self._first_end is None and ends is not None and len(ends):
            self._first_end = float(ends[0])
        for i in range(len(scores)):
            end = None if ends is None else float(ends[i])
            if self._elapsed(self.skipped + i, self._first_end, end) >= self.skip_s:
                return i
        return len(scores)

    def _persist(self, state: BaselineState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(state.model_dump(), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
