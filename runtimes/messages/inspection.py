"""Inspection messages: the trigger a PLC sends, the decision the device answers, trigger errors.

One decision per trigger, always: a part the device could not judge (no frame, camera
lost, a corrupt image, a model error, or a result that would miss the deadline) gets the
fail-safe verdict with ``reason`` saying why, and ``score`` null when nothing was scored.
A PLC acts on ``part_id`` and ``verdict``; everything else is for traceability. ``time_*``
is when the decision was made. A trigger is a plain part id or ``{"part_id": ..., "t": ...}``;
one the device cannot read is answered on the trigger error topic.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from factoryedge.errors import ConfigError
from factoryedge.runtimes.messages.base import Payload, build, common, json_object, parse_as
from factoryedge.runtimes.messages.identity import Identity, iso_utc

MAX_PART_ID = 128
DECISION = "factoryedge.decision/1"
TRIGGER_ERROR = "factoryedge.trigger_error/1"
REASONS = ("score", "deadline", "no_frame", "camera_lost", "model_error", "corrupt_frame")
Verdict = Literal["pass", "reject"]
Reason = Literal["score", "deadline", "no_frame", "camera_lost", "model_error", "corrupt_frame"]


class DecisionPayload(Payload):
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
                     model_version: str, frame_index: int | None = None, frame_pos: int | None = None,
                     frame_name: str | None = None,
                     detail: str = "", now: float | None = None) -> DecisionPayload:
    """Build a decision; ConfigError if a field is invalid (e.g. a non-finite score)."""
    return build(DecisionPayload, **common(DECISION, identity, now), part_id=part_id, verdict=verdict,
                  reason=reason, score=score, threshold=threshold, trigger_source=trigger_source,
                  trigger_utc=iso_utc(trigger_epoch), trigger_epoch=trigger_epoch,
                  capture_utc=iso_utc(capture_epoch) if capture_epoch is not None else None,
                  capture_epoch=capture_epoch, latency_ms=max(0.0, latency_ms), deadline_ms=deadline_ms,
                  model_name=model_name, model_version=model_version, frame_index=frame_index,
                  frame_pos=frame_pos if frame_pos is not None and frame_pos >= 0 else None,
                  frame_name=frame_name or None, detail=detail[:500])


class TriggerErrorPayload(Payload):
    """The answer to a trigger the device could not read, so the PLC side sees its mistake."""

    schema_: Literal[TRIGGER_ERROR] = Field(TRIGGER_ERROR, alias="schema")
    trigger_source: str
    error: str
    payload_excerpt: str


def trigger_error_payload(identity: Identity, *, source: str, error: str, raw: bytes,
                          now: float | None = None) -> TriggerErrorPayload:
    return build(TriggerErrorPayload, **common(TRIGGER_ERROR, identity, now), trigger_source=source,
                  error=error[:500], payload_excerpt=raw[:200].decode("utf-8", errors="replace"))


def parse_decision(data: bytes | str) -> DecisionPayload:
    """A decision as a consumer reads it; unknown fields are ignored, invalid ones raise ConfigError."""
    obj = json_object(data, "decision", '{"schema": "factoryedge.decision/1", "part_id": "A-1", ...}')
    if obj.get("schema") != DECISION:
        raise ConfigError(f"payload schema {obj.get('schema')!r} is not {DECISION!r}")
    return parse_as(DecisionPayload, obj)


def check_part_id(value: Any) -> str:
    """A part id as given, or ConfigError: 1-128 printable characters, no leading/trailing space."""
    if not isinstance(value, str) or not value or len(value) > MAX_PART_ID or not value.isprintable() \
            or value != value.strip():
        raise ConfigError(f"part id {str(value)[:80]!r} is not valid; use 1-{MAX_PART_ID} printable characters "
                          "without leading or trailing spaces, e.g. \"A-000123\"")
    return value


def parse_trigger(data: bytes) -> tuple[str, float | None]:
    """(part id, PLC time or None) from ``{"part_id": "...", "t": 1712...}`` or a plain-text id."""
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"trigger {data[:80]!r} is not UTF-8; send a plain part id or "
                          '{"part_id": "A-000123"}') from None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"trigger {text[:80]!r} is not valid JSON ({e}); e.g. {{\"part_id\": \"A-000123\"}}") from None
        unknown = sorted(set(obj) - {"part_id", "t"})
        if unknown:
            raise ConfigError(f"trigger has unknown fields {unknown}; valid: part_id, t (epoch seconds)")
        t = obj.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise ConfigError(f"trigger field t={t!r} must be epoch seconds (a number)")
        return check_part_id(obj.get("part_id")), (float(t) if t is not None else None)
    return check_part_id(text), None
