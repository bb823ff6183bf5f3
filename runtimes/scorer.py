"""Turning a stream of window scores into anomaly events a person can act on.

One noisy window must not page anyone: an anomaly is *raised* when k of the last n windows
score at or above the threshold, *escalates* when the recent scores reach a higher severity,
and *clears* only after ``clear_windows`` consecutive windows below ``hysteresis`` x
threshold. Severity is the ratio of the recent median score to the threshold.
"""
from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

SEVERITIES = ("warning", "alarm", "critical")


class ScorerConfig(BaseModel):
    """Debounce and severity settings, part of a device profile's ``scoring`` section."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(3, ge=1, description="windows at or above threshold among the last n to raise")
    n: int = Field(5, ge=1, description="length of the raise window")
    clear_windows: int = Field(10, ge=1, description="consecutive windows below the clear level to clear")
    hysteresis: float = Field(0.8, gt=0, le=1, description="clear level as a fraction of the threshold")
    severity: dict[Literal["warning", "alarm", "critical"], float] = Field(
        default_factory=lambda: {"warning": 1.0, "alarm": 2.0, "critical": 5.0},
        description="minimum score/threshold ratio for each severity",
    )
    threshold: float | None = Field(None, gt=0, description="override the bundle's (or the baseline's) threshold")

    @model_validator(mode="after")
    def _consistent(self):
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        levels = [self.severity.get(s) for s in SEVERITIES if s in self.severity]
        if levels != sorted(levels):
            raise ValueError(f"severity ratios must increase warning < alarm < critical, got {self.severity}")
        if "warning" not in self.severity:
            raise ValueError("severity needs a 'warning' level")
        return self


@dataclass
class AnomalyEvent:
    """A state change of one machine's anomaly state."""

    kind: Literal["raised", "escalated", "cleared"]
    severity: str
    score: float
    peak_score: float
    threshold: float
    window_start: float
    window_end: float
    n_windows: int
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Scorer:
    """Feeds window scores through the debounce; keeps the state between batches."""

    def __init__(self, threshold: float, config: ScorerConfig | None = None):
        self.config = config or ScorerConfig()
        self.threshold = float(self.config.threshold or threshold)
        self._recent: deque[float] = deque(maxlen=self.config.n)
        self._below = 0
        self.active: str | None = None
        self._episode_peak = 0.0
        self._episode_windows = 0
        self.windows_seen = 0
        self.windows_over = 0

    def set_threshold(self, threshold: float) -> None:
        """Change the threshold at run time (command topic, re-baselining); state is kept."""
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive number, got {threshold!r}")
        self.threshold = float(threshold)

    def severity_of(self, score: float) -> str:
        ratio = score / self.threshold
        level = "warning"
        for name in SEVERITIES:
            if name in self.config.severity and ratio >= self.config.severity[name]:
                level = name
        return level

    def update(self, scores: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[AnomalyEvent]:
        """Process windows in time order; returns the events they caused."""
        events = []
        cfg = self.config
        for score, t0, t1 in zip(np.asarray(scores, float), starts, ends):
            self.windows_seen += 1
            over = score >= self.threshold
            self.windows_over += int(over)
            self._recent.append(score)
            recent = np.fromiter(self._recent, float)
            if self.active is None:
                if np.count_nonzero(recent >= self.threshold) >= cfg.k:
                    level_score = float(np.median(recent[recent >= self.threshold]))
                    self.active = self.severity_of(level_score)
                    self._episode_peak = float(recent.max())
                    self._episode_windows = 1
                    self._below = 0
                    events.append(self._event("raised", level_score, t0, t1))
                continue
            self._episode_windows += 1
            self._episode_peak = max(self._episode_peak, float(score))
            if score < cfg.hysteresis * self.threshold:
                self._below += 1
                if self._below >= cfg.clear_windows:
                    events.append(self._event("cleared", float(score), t0, t1))
                    self.active = None
                    self._recent.clear()
                continue
            self._below = 0
            level = self.severity_of(float(np.median(recent)))
            if SEVERITIES.index(level) > SEVERITIES.index(self.active):
                self.active = level
                events.append(self._event("escalated", float(np.median(recent)), t0, t1))
        return events

    def _event(self, kind: str, score: float, t0: float, t1: float) -> AnomalyEvent:
        return AnomalyEvent(
            kind=kind,
            severity=self.active or "warning",
            score=score,
            peak_score=self._episode_peak,
            threshold=self.threshold,
            window_start=float(t0),
            window_end=float(t1),
            n_windows=self._episode_windows,
        )
