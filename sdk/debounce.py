"""The debounce: turning a stream of window scores into anomaly events a person can act on.

One noisy window must not page anyone: an anomaly is *raised* when k of the last n windows
are anomalous by the score rule, *escalates* when the recent scores reach a higher severity,
and *clears* only after ``clear_windows`` consecutive windows back below ``hysteresis`` x
threshold. Severity is how far the recent median score is past the threshold
(``ScoreRule.ratio``). It lives in the torch-free core because the device runs it live and
``factoryedge evaluate`` replays it offline, to report false alarms per hour of normal
running at the device's own settings.
"""
from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from factoryedge.scoring import ScoreRule

SEVERITIES = ("warning", "alarm", "critical")


class DebounceConfig(BaseModel):
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


class Debounce:
    """Feeds window scores through the debounce; keeps the state between batches.

    ``rule`` is the bundle's score rule (a bare number is a threshold, higher anomalous);
    ``config.threshold``, when set, overrides its threshold.
    """

    def __init__(self, rule: ScoreRule | float, config: DebounceConfig | None = None):
        self.config = config or DebounceConfig()
        rule = rule if isinstance(rule, ScoreRule) else ScoreRule(float(rule))
        self.rule = rule.with_threshold(self.config.threshold) if self.config.threshold else rule
        self._recent: deque[float] = deque(maxlen=self.config.n)
        self._below = 0
        self.active: str | None = None
        self._episode_peak = 0.0
        self._episode_windows = 0
        self.windows_seen = 0
        self.windows_over = 0

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def set_threshold(self, threshold: float) -> None:
        """Change the threshold at run time (command topic, re-baselining); state is kept."""
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a positive number, got {threshold!r}")
        self.rule = self.rule.with_threshold(float(threshold))

    def severity_of(self, score: float) -> str:
        ratio = self.rule.ratio(score)
        level = "warning"
        for name in SEVERITIES:
            if name in self.config.severity and ratio >= self.config.severity[name]:
                level = name
        return level

    def update(self, scores: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[AnomalyEvent]:
        """Process windows in time order; returns the events they caused."""
        scores = np.asarray(scores, float)
        if self.active is None and self._quiet(scores):
            return []
        events = []
        cfg = self.config
        for score, t0, t1 in zip(scores, starts, ends):
            self.windows_seen += 1
            over = self.rule.exceeds(score)
            self.windows_over += int(over)
            self._recent.append(score)
            recent = np.fromiter(self._recent, float)
            if self.active is None:
                hits = self.rule.is_anomalous(recent)
                if np.count_nonzero(hits) >= cfg.k:
                    level_score = float(np.median(recent[hits]))
                    self.active = self.severity_of(level_score)
                    self._episode_peak = float(recent.max())
                    self._episode_windows = 1
                    self._below = 0
                    events.append(self._event("raised", level_score, t0, t1))
                continue
            self._episode_windows += 1
            self._episode_peak = max(self._episode_peak, float(score))
            if self.rule.clears(score, cfg.hysteresis):
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

    def _quiet(self, scores: np.ndarray) -> bool:
        """Take a batch at once when nothing in it or in the recent windows is anomalous.

        Then no window of the batch can raise, so the state advances without the per-window
        loop: the normal running of a healthy machine costs one vectorised check per batch.
        """
        if self.rule.is_anomalous(np.concatenate((self._recent, scores))).any():
            return False
        self.windows_seen += len(scores)
        self._recent.extend(scores[-self.config.n :].tolist())
        return True

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


@dataclass(frozen=True)
class AlarmReplay:
    """What the device's debounce would have raised on a scored recording."""

    raised: int
    hours: float
    first_raise_s: float | None

    @property
    def per_hour(self) -> float:
        return self.raised / self.hours if self.hours > 0 else float("nan")


def replay(scores: np.ndarray, starts: np.ndarray, window_s: float, rule: ScoreRule,
           config: DebounceConfig | None = None) -> AlarmReplay:
    """Run the debounce over one recording's window scores (in time order) from a fresh state.

    ``starts`` are window start times in seconds; the covered time runs from the first
    window's start to the last window's end. On normal running every raise is a false alarm.
    """
    scores = np.asarray(scores, dtype=np.float64)
    starts = np.asarray(starts, dtype=np.float64)
    if not len(scores):
        return AlarmReplay(0, 0.0, None)
    events = Debounce(rule, config).update(scores, starts, starts + window_s)
    raised = [e for e in events if e.kind == "raised"]
    hours = float(starts[-1] + window_s - starts[0]) / 3600.0
    return AlarmReplay(len(raised), hours, raised[0].window_start if raised else None)
