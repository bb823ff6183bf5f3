"""Per-machine baselining: adapt one model's threshold to each machine it is installed on.

In calibrate mode the device collects the anomaly scores of its first minutes of running
(assumed healthy: commissioning, or right after maintenance) and applies the same rule the
training used (``factoryedge.scoring``) to set this machine's threshold. The result is
persisted atomically and tied to the model by its sha256, so a new model never inherits a
threshold calibrated for another.
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
    """Collects scores until ``min_windows`` are seen, then sets and persists the threshold."""

    def __init__(self, state_path: str | Path, bundle: Bundle, machine: str, min_windows: int):
        if min_windows < MIN_CALIBRATION_WINDOWS:
            raise ConfigError(
                f"baselining needs at least {MIN_CALIBRATION_WINDOWS} windows, got {min_windows}; "
                "raise scoring.baseline.duration_s"
            )
        self.path = Path(state_path)
        self.bundle = bundle
        self.machine = machine
        self.min_windows = min_windows
        self._scores: list[np.ndarray] = []
        self._count = 0
        self.collecting = False

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
        log.info("baselining %s: collecting %d windows of normal running", self.machine, self.min_windows)

    def add(self, scores: np.ndarray) -> BaselineState | None:
        """Add window scores; returns the new state once enough were collected."""
        if not self.collecting:
            return None
        self._scores.append(np.asarray(scores, dtype=np.float64))
        self._count += len(scores)
        if self._count < self.min_windows:
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

    def _persist(self, state: BaselineState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(state.model_dump(), indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
