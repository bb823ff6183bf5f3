"""Condition-monitoring payloads: anomaly state changes and periodic score summaries."""
from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from factoryedge.errors import ConfigError
from factoryedge.runtimes import clock
from factoryedge.runtimes.messages.base import Payload, build, common
from factoryedge.runtimes.messages.identity import Identity, iso_utc

ANOMALY = "factoryedge.anomaly/1"
TELEMETRY = "factoryedge.telemetry/1"
Severity = Literal["warning", "alarm", "critical"]
RUN_ID = r"^[0-9a-f]{32}$"


def _order_fields(seq: int | None, run_id: str | None, time_mono: float | None) -> dict[str, Any]:
    """The device's own order of a payload: its sequence number in this run, and the monotonic clock."""
    return {"seq": seq, "run_id": run_id, "time_mono": clock.monotonic() if time_mono is None else time_mono}


class AnomalyPayload(Payload):
    """An anomaly state change; consumers de-duplicate by ``event_id``."""

    schema_: Literal[ANOMALY] = Field(ANOMALY, alias="schema")
    event_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    state: Literal["raised", "escalated", "cleared"]
    severity: Severity
    score: float
    peak_score: float | None = None
    threshold: float = Field(gt=0)
    window_start_utc: str
    window_end_utc: str
    window_start_epoch: float
    window_end_epoch: float
    n_windows: int = Field(ge=1)
    model_name: str
    model_version: str
    details: dict[str, Any] = Field(default_factory=dict)
    # Added within /1 (older devices omit them): the device's own order, immune to wall-clock jumps.
    seq: int | None = Field(None, ge=1)
    run_id: str | None = Field(None, pattern=RUN_ID)
    time_mono: float | None = None


def anomaly_payload(identity: Identity, *, severity: str, score: float, threshold: float,
                    window_start: float, window_end: float, model_name: str, model_version: str,
                    state: str = "raised", peak_score: float | None = None, n_windows: int = 1,
                    details: dict[str, Any] | None = None, event_id: str | None = None,
                    now: float | None = None, seq: int | None = None, run_id: str | None = None,
                    time_mono: float | None = None) -> AnomalyPayload:
    """Build an anomaly event; window times are epoch seconds. Raises ConfigError if invalid.

    ``seq`` numbers the device's anomaly events from 1 within one run (``run_id``);
    ``time_mono`` defaults to the monotonic clock now.
    """
    if window_end < window_start:
        raise ConfigError(f"window_end {window_end!r} is before window_start {window_start!r}")
    return build(AnomalyPayload, **common(ANOMALY, identity, now),
                  event_id=event_id or uuid.uuid4().hex, state=state, severity=severity, score=score,
                  peak_score=peak_score, threshold=threshold,
                  window_start_utc=iso_utc(window_start), window_end_utc=iso_utc(window_end),
                  window_start_epoch=window_start, window_end_epoch=window_end, n_windows=n_windows,
                  model_name=model_name, model_version=model_version, details=details or {},
                  **_order_fields(seq, run_id, time_mono))


def anomaly_from_event(identity: Identity, event: Any, model_name: str, model_version: str,
                       details: dict[str, Any] | None = None, seq: int | None = None,
                       run_id: str | None = None) -> AnomalyPayload:
    """The payload for a ``factoryedge.debounce.AnomalyEvent``, keeping its event_id."""
    return anomaly_payload(identity, severity=event.severity, score=event.score, threshold=event.threshold,
                           window_start=event.window_start, window_end=event.window_end,
                           model_name=model_name, model_version=model_version, state=event.kind,
                           peak_score=event.peak_score, n_windows=event.n_windows, details=details,
                           event_id=event.event_id, seq=seq, run_id=run_id)


class TelemetryPayload(Payload):
    """A periodic summary of the window scores since the previous one."""

    schema_: Literal[TELEMETRY] = Field(TELEMETRY, alias="schema")
    period_start_utc: str
    period_end_utc: str
    period_start_epoch: float
    period_end_epoch: float
    n_windows: int = Field(ge=0)
    score_min: float | None
    score_mean: float | None
    score_max: float | None
    score_last: float | None
    n_over_threshold: int = Field(ge=0)
    threshold: float = Field(gt=0)
    anomaly_state: Severity | None = None
    model_name: str
    model_version: str
    # Added within /1 (older devices omit them): see AnomalyPayload. ``gaps``: stream gaps
    # (unplugged sensor, lost frames, a new burst) in the period; windows never span one.
    seq: int | None = Field(None, ge=1)
    run_id: str | None = Field(None, pattern=RUN_ID)
    time_mono: float | None = None
    gaps: int | None = Field(None, ge=0)


def telemetry_payload(identity: Identity, scores: Iterable[float], *, threshold: float,
                      period_start: float, period_end: float, model_name: str, model_version: str,
                      anomaly_state: str | None = None, now: float | None = None,
                      n_over_threshold: int | None = None, seq: int | None = None, run_id: str | None = None,
                      time_mono: float | None = None, gaps: int | None = None) -> TelemetryPayload:
    """Summarise the scores of one period; score fields are null when the period had no windows.

    ``n_over_threshold`` is counted by the caller's score rule; when omitted, a score at or
    above ``threshold`` counts (the direction of every model shipped today).
    """
    values = [float(s) for s in scores]
    finite = [v for v in values if math.isfinite(v)]
    return build(TelemetryPayload, **common(TELEMETRY, identity, now),
                  period_start_utc=iso_utc(period_start), period_end_utc=iso_utc(period_end),
                  period_start_epoch=period_start, period_end_epoch=period_end, n_windows=len(values),
                  score_min=min(finite) if finite else None,
                  score_mean=sum(finite) / len(finite) if finite else None,
                  score_max=max(finite) if finite else None,
                  score_last=finite[-1] if finite else None,
                  n_over_threshold=(sum(v >= threshold for v in finite) if n_over_threshold is None
                                    else n_over_threshold), threshold=threshold,
                  anomaly_state=anomaly_state, model_name=model_name, model_version=model_version, gaps=gaps,
                  **_order_fields(seq, run_id, time_mono))
