"""The pass/reject decision for one part, as published on ``<machine topic>/decision`` at QoS 1.

One decision per trigger, always: a part the device could not judge (no frame, camera
lost, a corrupt image, a model error, or a result that would miss the deadline) gets the
fail-safe verdict with ``reason`` saying why, and ``score`` null when nothing was scored.
A PLC acts on ``part_id`` and ``verdict``; everything else is for traceability. Times are
given as ISO-8601 UTC and epoch seconds, like every factoryedge payload; ``time_*`` is
when the decision was made. Consumers ignore fields they do not know (see ``payloads``).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from factoryedge.errors import ConfigError
from factoryedge.runtimes.sinks.payloads import Identity, Topics, _build, _common, _json_object, _Payload, iso_utc

DECISION = "factoryedge.decision/1"
TRIGGER_ERROR = "factoryedge.trigger_error/1"
REASONS = ("score", "deadline", "no_frame", "camera_lost", "model_error", "corrupt_frame")
Verdict = Literal["pass", "reject"]
Reason = Literal["score", "deadline", "no_frame", "camera_lost", "model_error", "corrupt_frame"]


def decision_topic(topics: Topics) -> str:
    return f"{topics.base}/decision"


def trigger_error_topic(topics: Topics) -> str:
    return f"{topics.base}/trigger/error"


class DecisionPayload(_Payload):
    """What the device decided about one part, and the evidence."""

    schema_: Literal[DECISION] = Field(DECISION, alias="schema")
    part_id: str = Field(min_length=1, max_length=128)
    verdict: Verdict
    reason: Reason
    score: float | None
    threshold: float | None
    trigger_source: str
    trigger_utc: str
    trigger_epoch: float
    capture_utc: str | None
    capture_epoch: float | None
    latency_ms: float = Field(ge=0)
    deadline_ms: float = Field(gt=0)
    model_name: str
    model_version: str
    frame_index: int | None = None
    frame_pos: int | None = None
    frame_name: str | None = None
    detail: str = ""


def decision_payload(identity: Identity, *, part_id: str, verdict: str, reason: str, score: float | None,
                     threshold: float | None, trigger_source: str, trigger_epoch: float,
                     capture_epoch: float | None, latency_ms: float, deadline_ms: float, model_name: str,
                     model_version: str, frame_index: int | None = None, frame_pos: int | None = None, frame_name: str | None = None,
                     detail: str = "", now: float | None = None) -> DecisionPayload:
    """Build a decision; ConfigError if a field is invalid (e.g. a non-finite score)."""
    return _build(DecisionPayload, **_common(DECISION, identity, now), part_id=part_id, verdict=verdict,
                  reason=reason, score=score, threshold=threshold, trigger_source=trigger_source,
                  trigger_utc=iso_utc(trigger_epoch), trigger_epoch=trigger_epoch,
                  capture_utc=iso_utc(capture_epoch) if capture_epoch is not None else None,
                  capture_epoch=capture_epoch, latency_ms=max(0.0, latency_ms), deadline_ms=deadline_ms,
                  model_name=model_name, model_version=model_version, frame_index=frame_index,
                  frame_pos=frame_pos if frame_pos is not None and frame_pos >= 0 else None, frame_name=frame_name or None, detail=detail[:500])


class TriggerErrorPayload(_Payload):
    """The answer to a trigger the device could not read, so the PLC side sees its mistake."""

    schema_: Literal[TRIGGER_ERROR] = Field(TRIGGER_ERROR, alias="schema")
    trigger_source: str
    error: str
    payload_excerpt: str


def trigger_error_payload(identity: Identity, *, source: str, error: str, raw: bytes,
                          now: float | None = None) -> TriggerErrorPayload:
    return _build(TriggerErrorPayload, **_common(TRIGGER_ERROR, identity, now), trigger_source=source,
                  error=error[:500], payload_excerpt=raw[:200].decode("utf-8", errors="replace"))


def parse_decision(data: bytes | str) -> DecisionPayload:
    """A decision as a consumer reads it; unknown fields are ignored, invalid ones raise ConfigError."""
    obj = _json_object(data, "decision", '{"schema": "factoryedge.decision/1", "part_id": "A-1", ...}')
    if obj.get("schema") != DECISION:
        raise ConfigError(f"payload schema {obj.get('schema')!r} is not {DECISION!r}")
    known = {f.alias or name for name, f in DecisionPayload.model_fields.items()}
    fields: dict[str, Any] = {k: v for k, v in obj.items() if k in known}
    return _build(DecisionPayload, **fields)
