"""Judging condition monitoring in time, on runs to failure: early alarms against lead time.

A run to failure has no labelled onset, only an end of life. Each method learns the
bearing's normal state during *commissioning* (a stated period after an optional run-in
skip), gets its threshold from the commissioning scores, and from the end of commissioning
its scores go through the device's debounce (``factoryedge.debounce.Debounce``) in time
order. What counts:

- ``early_episodes``: alarm episodes raised after commissioning and before half of life,
  when the bearing is taken to run normally: each is a false alarm a plant would act on;
- ``alarmed``: an episode is still active at the end of life;
- ``lead_s``: end of life minus the start of that last episode (0 if none).

Threshold "multiples" parameterise every method on one axis for the trade-off plot: the
RMS rule alarms at ``m`` x the commissioning RMS (vibration-severity practice); a learned
score alarms at ``median + m x (q99 - median)`` of its commissioning scores, the rule
``calibrate_threshold`` uses with margin ``m``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from factoryedge.debounce import Debounce, DebounceConfig
from factoryedge.errors import ConfigError, DataError
from factoryedge.manifest import ThresholdRule
from factoryedge.scoring import MIN_CALIBRATION_WINDOWS, ScoreRule, calibrate_threshold

# Defaults: the settings most often chosen leave-one-bearing-out over the six PRONOSTIA runs
# (experiments/run_to_failure_study.py; runs/rtf-study/results.md lists each fold's choice).
# A 30 min run-in skip and 10 min of commissioning fit before half of the shortest life
# (86 min); the 2560-sample window is one whole snapshot.
SKIP_S = 1800.0
DURATION_S = 600.0
MULTIPLES = {"rms_rule": 2.5, "model": 12.0, "baseline": 3.0, "recurrent": 20.0}
RMS_MULTIPLE = MULTIPLES["rms_rule"]
MODEL_MARGIN = MULTIPLES["model"]
SEQUENCE_STEPS = 6


@dataclass(frozen=True)
class Commissioning:
    """Learn normal from ``skip_s`` after the first burst for ``duration_s`` seconds.

    The skip leaves out the run-in transient several bearings show in their first minutes;
    the period must hold enough windows to calibrate a threshold, and end well before half
    of the shortest life one expects to judge (PRONOSTIA's shortest run lasts 86 min).
    """

    skip_s: float = SKIP_S
    duration_s: float = DURATION_S

    def __post_init__(self) -> None:
        if not (np.isfinite(self.skip_s) and self.skip_s >= 0):
            raise ConfigError(f"commissioning skip_s={self.skip_s!r} must be a number of seconds >= 0")
        if not (np.isfinite(self.duration_s) and self.duration_s > 0):
            raise ConfigError(f"commissioning duration_s={self.duration_s!r} must be a positive number of seconds")

    @property
    def end_s(self) -> float:
        return self.skip_s + self.duration_s

    def mask(self, t_s: np.ndarray) -> np.ndarray:
        """Which times (seconds since the first burst) fall in the commissioning period."""
        t = np.asarray(t_s, dtype=np.float64)
        return (t >= self.skip_s) & (t < self.end_s)


def threshold_at(method: str, commissioning_scores: np.ndarray, multiple: float) -> float:
    """The threshold of ``method`` at a threshold multiple (see the module docstring)."""
    s = np.asarray(commissioning_scores, dtype=np.float64)
    if method == "rms_rule":
        return float(multiple)  # rms_rule scores are already ratios to the commissioning RMS
    if s.size < MIN_CALIBRATION_WINDOWS:
        raise DataError(f"commissioning gave {s.size} windows; at least {MIN_CALIBRATION_WINDOWS} are needed "
                        "to set a threshold: commission for longer")
    return calibrate_threshold(s, ThresholdRule(margin=max(1.0, float(multiple))))[0]


def rms_ratio(windows: np.ndarray, commissioning: np.ndarray) -> np.ndarray:
    """The RMS rule's score per window: the largest channel RMS relative to that channel's
    median RMS over the commissioning windows (``commissioning`` is a boolean mask)."""
    rms = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1))  # (k, channels)
    if not commissioning.any():
        raise DataError("no window falls in the commissioning period; it starts after the recording ends")
    ref = np.median(rms[commissioning], axis=0)
    return (rms / np.maximum(ref, 1e-12)).max(axis=1)


@dataclass
class Episode:
    start_s: float
    end_s: float | None  # None: still active at the end of the run


def alarm_episodes(scores: np.ndarray, starts: np.ndarray, window_s: float, threshold: float,
                   debounce: DebounceConfig) -> list[Episode]:
    """The device's debounce over window scores in time order, from a fresh state."""
    events = Debounce(ScoreRule(float(threshold)), debounce).update(
        np.asarray(scores, np.float64), np.asarray(starts, np.float64), np.asarray(starts, np.float64) + window_s)
    out: list[Episode] = []
    for e in events:
        if e.kind == "raised":
            out.append(Episode(e.window_start, None))
        elif e.kind == "cleared" and out:
            out[-1].end_s = e.window_end
    return out


def judge(episodes: list[Episode], life_s: float, commissioned_s: float) -> dict:
    """early_episodes, alarmed and lead_s of one method on one run (see the module docstring)."""
    early = sum(1 for e in episodes if commissioned_s <= e.start_s < life_s / 2)
    active = episodes[-1] if episodes and episodes[-1].end_s is None else None
    return {"early_episodes": early, "alarmed": active is not None,
            "lead_s": float(life_s - active.start_s) if active else 0.0, "episodes": len(episodes)}


@dataclass
class MethodTrace:
    """One method's scores over one run, after commissioning, with its threshold and episodes."""

    scores: np.ndarray
    starts: np.ndarray
    threshold: float
    episodes: list[Episode]
    result: dict
    commissioning_scores: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0))


@dataclass
class RunEvaluation:
    source: str
    life_s: float
    commissioning: Commissioning
    window_s: float
    methods: dict[str, MethodTrace]

    def as_dict(self) -> dict:
        return {"source": self.source, "life_s": self.life_s,
                **{name: {**m.result, "threshold": m.threshold} for name, m in self.methods.items()}}


ScoreFn = Callable[[np.ndarray], np.ndarray]


def evaluate_run(source: str, life_s: float, starts: np.ndarray, window_s: float, scores: dict[str, np.ndarray],
                 commissioning: Commissioning, debounce: DebounceConfig,
                 multiples: dict[str, float] | None = None) -> RunEvaluation:
    """Each method's scores (one per window, ``starts`` in seconds since the first burst) judged
    after ``commissioning`` at its threshold multiple (defaults: ``MULTIPLES``)."""
    multiples = {**MULTIPLES, **(multiples or {})}
    comm = commissioning.mask(starts)
    after = starts >= commissioning.end_s
    if commissioning.end_s >= life_s / 2:
        raise DataError(f"{source}: commissioning ends at {commissioning.end_s:g} s, after half of its life "
                        f"({life_s / 2:g} s); commission for a shorter period on this run")
    traces = {}
    for name, s in scores.items():
        thr = threshold_at(name, s[comm], multiples.get(name, MODEL_MARGIN))
        eps = alarm_episodes(s[after], starts[after], window_s, thr, debounce)
        traces[name] = MethodTrace(s[after], starts[after], thr, eps, judge(eps, life_s, commissioning.end_s), s[comm])
    return RunEvaluation(source, life_s, commissioning, window_s, traces)


def sweep(run: RunEvaluation, method: str, multiples: np.ndarray, debounce: DebounceConfig) -> list[dict]:
    """``judge`` of one method on one run at each threshold multiple (the trade-off curve)."""
    m = run.methods[method]
    out = []
    for k in multiples:
        thr = threshold_at(method, m.commissioning_scores, float(k))
        eps = alarm_episodes(m.scores, m.starts, run.window_s, thr, debounce)
        out.append({"multiple": float(k), **judge(eps, run.life_s, run.commissioning.end_s)})
    return out


def summary(runs: list[RunEvaluation]) -> dict:
    """Per method over all runs: total early episodes, runs alarmed at the end, median lead."""
    out = {}
    for name in runs[0].methods if runs else ():
        res = [r.methods[name].result for r in runs]
        out[name] = {"early_episodes": int(sum(r["early_episodes"] for r in res)),
                     "runs_with_early_episodes": int(sum(r["early_episodes"] > 0 for r in res)),
                     "alarmed_runs": int(sum(r["alarmed"] for r in res)), "runs": len(res),
                     "median_lead_s": float(np.median([r["lead_s"] for r in res]))}
    return out
