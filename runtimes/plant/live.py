"""What the device is doing now, in one place: the state every plant-facing output reads.

    ConditionMonitor / InspectionStation --(scores, events, decisions, health)--> LiveState
        LiveState --> Sparkplug B edge node (DDATA on change)
                  --> operator page (JSON the page polls)
                  --> Prometheus /metrics (read at scrape time)

The programs write; the outputs only read, on their own threads and clocks, so no output
can slow or stop scoring. Writes are a few attribute updates under one lock per scored
batch (not per window): scores fall into time bins (the maximum, the mean, how many crossed
the threshold) over a fixed horizon, so a page shows minutes of a 10 kHz window stream in a
few hundred points. Latency histograms use fixed buckets (Prometheus's cumulative form is
built at read time). A program with no plant output configured uses ``NO_LIVE_STATE``, whose
methods do nothing.

``version`` grows with every change, so a reader can tell cheaply whether anything moved.
"""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Seconds. Scoring a window batch takes tens of microseconds to milliseconds; a part's
# decision milliseconds to its deadline; the buckets cover both.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class ModelCard:
    """The bundle an operator sees on the page and a SCADA system in the BIRTH certificates."""

    name: str
    version: str
    kind: str
    bundle: str
    backend: str
    threshold_rule: str
    higher_is_anomalous: bool
    parity: str
    signer: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def model_card(bundle: Any, backend: str, trusted: list | None = None) -> ModelCard:
    """The card of a loaded ``factoryedge.bundle.Bundle`` running on ``backend``."""
    from factoryedge.scoring import describe_false_reject
    from factoryedge.signing import describe_signature

    m = bundle.manifest
    r = m.score.rule
    # The budget line says what the operator cares about: how many good parts it will reject.
    rule = describe_false_reject(m.score)
    if rule is None and hasattr(r, "max_false_reject"):
        rule = f"false-reject budget {r.max_false_reject * 100:.2g} % of held-out good scores"
    elif rule is None:
        rule = (f"median + {r.margin:g} x (q{r.quantile * 100:g} - median) of held-out normal scores" if r is not None
                else "operating point chosen on labelled data (see the manifest's provenance.training)")
    if m.parity is None:
        parity = "not recorded"
    else:
        worst = max(m.parity.max_abs_diff.values(), default=0.0)
        parity = (f"{m.parity.runtime} vs {m.parity.reference}: max |diff| {worst:.3g} over {m.parity.n_inputs} "
                  f"inputs, {m.parity.decisions_changed} decisions changed")
    return ModelCard(name=m.name, version=m.version, kind=m.kind, bundle=str(bundle.path), backend=backend,
                     threshold_rule=str(rule), higher_is_anomalous=bool(m.score.higher_is_anomalous),
                     parity=parity, signer=describe_signature(bundle.path, trusted))


@dataclass
class Histogram:
    """Fixed-bucket latency histogram: counts per bucket (the last one is +Inf), sum and count."""

    bounds: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, seconds: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += n
        self.total += seconds * n
        self.n += n

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound, cumulative count), ..., ("+Inf", n)]`` as Prometheus exposes it."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out


class LiveState:
    """See the module doc. ``kind`` is ``condition_monitoring`` or ``inspection``."""

    def __init__(self, identity: Any, kind: str, *, bin_s: float = 1.0, horizon_s: float = 600.0,
                 recent: int = 50) -> None:
        self.identity = identity
        self.kind = kind
        self.bin_s = float(bin_s)
        self.started = time.monotonic()  # for uptime, a duration
        self.card: ModelCard | None = None
        self.threshold: float | None = None
        self.anomaly_active = False
        self.severity: str | None = None
        self.last_score: float | None = None
        self.windows_scored = 0
        self.events: Counter[str] = Counter()  # by severity
        self.decisions: Counter[tuple[str, str]] = Counter()  # by (verdict, reason)
        self.scoring_latency = Histogram()  # per window (monitoring) or per scored part (inspection)
        self.decision_latency = Histogram()  # trigger to published decision (inspection)
        self.last_decision: dict[str, Any] | None = None
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=recent)
        self.recent_decisions: deque[dict[str, Any]] = deque(maxlen=recent)
        self.health: dict[str, Any] = {}
        self.version = 0
        self._bins: deque[list[float]] = deque(maxlen=max(1, int(horizon_s / self.bin_s)))
        self._lock = threading.Lock()

    # -- written by the programs ---------------------------------------------------------------

    def set_card(self, card: ModelCard, threshold: float) -> None:
        with self._lock:
            self.card, self.threshold = card, float(threshold)
            self.version += 1

    def set_threshold(self, threshold: float) -> None:
        with self._lock:
            self.threshold = float(threshold)
            self.version += 1

    def add_scores(self, t_end: float, scores: np.ndarray, rule: Any, seconds: float) -> None:
        """One scored batch: its last window's end time (epoch), its scores, the ``ScoreRule``, the time it took."""
        n = len(scores)
        if not n:
            return
        n_over = int(np.count_nonzero(rule.is_anomalous(scores)))
        top, total, last = float(scores.max()), float(scores.sum()), float(scores[-1])
        with self._lock:
            self.windows_scored += n
            self.last_score = last
            self.scoring_latency.observe(seconds / n, n)
            self._bin(t_end, top, total, n, n_over)
            self.version += 1

    def set_state(self, severity: str | None) -> None:
        """The debounced state: the active anomaly's severity, or None when the machine runs normally."""
        if severity == self.severity:
            return
        with self._lock:
            self.anomaly_active, self.severity = severity is not None, severity
            self.version += 1

    def add_event(self, payload: Any) -> None:
        """A published anomaly event (``AnomalyPayload``)."""
        record = payload.model_dump(by_alias=True)
        with self._lock:
            self.events[str(record.get("severity") or "unknown")] += 1
            self.recent_events.appendleft(record)
            self.version += 1

    def add_decision(self, payload: Any, scoring_s: float | None = None) -> None:
        """A published decision (``DecisionPayload``); ``scoring_s`` when the model scored the part."""
        record = payload.model_dump(by_alias=True)
        score = record.get("score")
        with self._lock:
            self.decisions[(record["verdict"], record["reason"])] += 1
            self.decision_latency.observe(record["latency_ms"] / 1000.0)
            if scoring_s is not None:
                self.scoring_latency.observe(scoring_s)
            if score is not None:
                self.last_score = float(score)
                self.windows_scored += 1
                over = int(record["verdict"] == "reject" and record["reason"] == "score")
                self._bin(record["time_epoch"], float(score), float(score), 1, over)
            self.last_decision = record
            self.recent_decisions.appendleft(record)
            self.version += 1

    def set_health(self, payload: Any) -> None:
        record = payload.model_dump(by_alias=True)
        with self._lock:
            self.health = record
            self.version += 1

    # -- read by the outputs -----------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        """Copies taken together under the lock: windows_scored, events, decisions and both latency histograms."""
        def copy(h: Histogram) -> Histogram:
            out = Histogram(h.bounds)
            out.counts, out.total, out.n = list(h.counts), h.total, h.n
            return out

        with self._lock:
            return {"windows_scored": self.windows_scored, "events": dict(self.events),
                    "decisions": dict(self.decisions), "scoring_latency": copy(self.scoring_latency),
                    "decision_latency": copy(self.decision_latency)}

    def events_total(self) -> int:
        with self._lock:
            return sum(self.events.values())

    def verdicts(self) -> dict[str, int]:
        """Decisions by verdict: ``{"pass": n, "reject": m}``."""
        with self._lock:
            out = {"pass": 0, "reject": 0}
            for (verdict, _), n in self.decisions.items():
                out[verdict] = out.get(verdict, 0) + n
            return out

    def timeline(self, since: float | None = None) -> list[dict[str, float]]:
        """Time bins (``t`` start epoch, ``max``, ``mean``, ``n``, ``over``), oldest first, newer than ``since``."""
        with self._lock:
            bins = [b for b in self._bins if since is None or b[0] > since]
        return [{"t": b[0], "max": b[1], "mean": b[2] / b[3], "n": int(b[3]), "over": int(b[4])} for b in bins]

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """Everything at once, JSON-ready (what the operator page polls)."""
        verdicts = self.verdicts()
        decided = verdicts["pass"] + verdicts["reject"]
        with self._lock:
            out = {
                "version": self.version, "now": time.time(), "kind": self.kind, "identity": self.identity.fields(),
                "uptime_s": time.monotonic() - self.started, "card": self.card.as_dict() if self.card else None,
                "threshold": self.threshold, "anomaly_active": self.anomaly_active, "severity": self.severity,
                "last_score": self.last_score, "windows_scored": self.windows_scored,
                "events_total": sum(self.events.values()), "events_by_severity": dict(self.events),
                "recent_events": list(self.recent_events), "recent_decisions": list(self.recent_decisions),
                "verdicts": verdicts, "reject_rate": verdicts["reject"] / decided if decided else None,
                "health": dict(self.health), "bin_s": self.bin_s,
            }
        out["timeline"] = self.timeline(since)
        return out

    # -- internals -----------------------------------------------------------------------------

    def _bin(self, t: float, top: float, total: float, n: int, over: int) -> None:
        start = t - t % self.bin_s
        if self._bins and self._bins[-1][0] == start:
            b = self._bins[-1]
            b[1] = max(b[1], top)
            b[2] += total
            b[3] += n
            b[4] += over
        elif not self._bins or start > self._bins[-1][0]:
            self._bins.append([start, top, total, n, over])
        # an older time (a replay, a clock step back) stays out of the timeline, not out of the counters


class _NoLiveState:
    """For a program with no plant output: every write is a no-op."""

    def __getattr__(self, name: str):
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


NO_LIVE_STATE: Any = _NoLiveState()
