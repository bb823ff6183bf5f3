"""The MQTT topic scheme and versioned JSON payloads of ``firmware-config/mqtt.md``.

Every payload carries ``"schema": "factoryedge.<kind>/<major>"``. Within one major version
fields are only ever added, so consumers must ignore fields they do not know;
``parse_payload`` does exactly that. Builders refuse unknown fields (a typo is a bug) and
non-finite numbers (JSON has no NaN). Times are given twice: ISO-8601 UTC for people and
epoch seconds for programs.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from glob import glob
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from factoryedge.errors import ConfigError

ANOMALY = "factoryedge.anomaly/1"
TELEMETRY = "factoryedge.telemetry/1"
HEALTH = "factoryedge.health/1"
STATUS = "factoryedge.status/1"
COMMAND = "factoryedge.command/1"
COMMAND_RESPONSE = "factoryedge.command_response/1"

Severity = Literal["warning", "alarm", "critical"]
COMMANDS = ("recalibrate", "reload", "set_threshold")
COMMAND_EXAMPLE = '{"command": "set_threshold", "args": {"threshold": 4.2}, "request_id": "r-17"}'

# Plain ASCII segments: PLC and SCADA MQTT clients often mishandle spaces or UTF-8 in topics,
# and '+', '#' and '/' would change what a subscription matches.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_segment(name: str, value: str) -> str:
    """A topic segment (site, line, machine, device id) or a ConfigError saying what is allowed."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise ConfigError(
            f"{name}={value!r} cannot be an MQTT topic segment; use 1-64 characters from "
            "A-Z a-z 0-9 . _ - starting with a letter or digit (no spaces, '/', '+', '#')"
        )
    return value


def iso_utc(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a ``Z`` suffix."""
    stamp = dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    """Which machine a device watches, and which device it is: the topic path and payload fields."""

    site: str
    line: str
    machine: str
    device_id: str

    def __post_init__(self):
        for name in ("site", "line", "machine", "device_id"):
            check_segment(name, getattr(self, name))

    def fields(self) -> dict[str, str]:
        return {"device_id": self.device_id, "site": self.site, "line": self.line, "machine": self.machine}


@dataclass(frozen=True)
class Topics:
    """The topics of one machine, all under ``base`` = ``<root>/v1/<site>/<line>/<machine>``."""

    base: str
    anomaly: str
    telemetry: str
    health: str
    status: str
    command: str
    command_response: str

    @classmethod
    def for_identity(cls, identity: Identity, root: str = "factoryedge") -> Topics:
        parts = root.split("/")
        for part in parts:
            check_segment("topic root", part)
        b = "/".join([*parts, "v1", identity.site, identity.line, identity.machine])
        return cls(b, f"{b}/event/anomaly", f"{b}/telemetry/score", f"{b}/health", f"{b}/status",
                   f"{b}/command", f"{b}/command/response")


class _Payload(BaseModel):
    """Common to every payload: schema tag, machine identity, and when it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              populate_by_name=True, protected_namespaces=())

    # "schema" would shadow a (deprecated) BaseModel attribute, hence the alias.
    schema_: str = Field(alias="schema")
    device_id: str
    site: str
    line: str
    machine: str
    time_utc: str
    time_epoch: float

    def to_bytes(self) -> bytes:
        """Compact UTF-8 JSON, as published."""
        return self.model_dump_json(by_alias=True).encode()


def _common(schema: str, identity: Identity, now: float | None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"schema": schema, **identity.fields(), "time_utc": iso_utc(now), "time_epoch": now}


class AnomalyPayload(_Payload):
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


def anomaly_payload(identity: Identity, *, severity: str, score: float, threshold: float,
                    window_start: float, window_end: float, model_name: str, model_version: str,
                    state: str = "raised", peak_score: float | None = None, n_windows: int = 1,
                    details: dict[str, Any] | None = None, event_id: str | None = None,
                    now: float | None = None) -> AnomalyPayload:
    """Build an anomaly event; window times are epoch seconds. Raises ConfigError if invalid."""
    if window_end < window_start:
        raise ConfigError(f"window_end {window_end!r} is before window_start {window_start!r}")
    return _build(AnomalyPayload, **_common(ANOMALY, identity, now),
                  event_id=event_id or uuid.uuid4().hex, state=state, severity=severity, score=score,
                  peak_score=peak_score, threshold=threshold,
                  window_start_utc=iso_utc(window_start), window_end_utc=iso_utc(window_end),
                  window_start_epoch=window_start, window_end_epoch=window_end, n_windows=n_windows,
                  model_name=model_name, model_version=model_version, details=details or {})


def anomaly_from_scorer_event(identity: Identity, event: Any, model_name: str, model_version: str,
                              details: dict[str, Any] | None = None) -> AnomalyPayload:
    """The payload for a ``factoryedge.runtimes.scorer.AnomalyEvent``, keeping its event_id."""
    return anomaly_payload(identity, severity=event.severity, score=event.score, threshold=event.threshold,
                           window_start=event.window_start, window_end=event.window_end,
                           model_name=model_name, model_version=model_version, state=event.kind,
                           peak_score=event.peak_score, n_windows=event.n_windows, details=details,
                           event_id=event.event_id)


class TelemetryPayload(_Payload):
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


def telemetry_payload(identity: Identity, scores: Iterable[float], *, threshold: float,
                      period_start: float, period_end: float, model_name: str, model_version: str,
                      anomaly_state: str | None = None, now: float | None = None) -> TelemetryPayload:
    """Summarise the scores of one period; score fields are null when the period had no windows."""
    values = [float(s) for s in scores]
    finite = [v for v in values if math.isfinite(v)]
    return _build(TelemetryPayload, **_common(TELEMETRY, identity, now),
                  period_start_utc=iso_utc(period_start), period_end_utc=iso_utc(period_end),
                  period_start_epoch=period_start, period_end_epoch=period_end, n_windows=len(values),
                  score_min=min(finite) if finite else None,
                  score_mean=sum(finite) / len(finite) if finite else None,
                  score_max=max(finite) if finite else None,
                  score_last=finite[-1] if finite else None,
                  n_over_threshold=sum(v >= threshold for v in finite), threshold=threshold,
                  anomaly_state=anomaly_state, model_name=model_name, model_version=model_version)


class HealthPayload(_Payload):
    """How the device itself is doing; any field it cannot measure is null."""

    schema_: Literal[HEALTH] = Field(HEALTH, alias="schema")
    uptime_s: float = Field(ge=0)
    input_rate_hz: float | None = None
    window_rate_hz: float | None = None
    lag_s: float | None = None
    dropped_frames: int = Field(0, ge=0)
    cpu_temp_c: float | None = None
    load_1m: float | None = None
    cpu_count: int | None = None
    outbox_depth: int | None = None
    mqtt_reconnects: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def health_payload(identity: Identity, *, uptime_s: float, now: float | None = None,
                   measure_system: bool = True, **fields: Any) -> HealthPayload:
    """Build a health report; with ``measure_system`` CPU temperature and load are read here."""
    if measure_system:
        for key, value in system_metrics().items():
            fields.setdefault(key, value)
    return _build(HealthPayload, **_common(HEALTH, identity, now), uptime_s=uptime_s, **fields)


def system_metrics() -> dict[str, Any]:
    """CPU temperature (hottest CPU thermal zone, else hottest zone) and 1-minute load, or None."""
    temps, cpu_temps = [], []
    for zone in glob("/sys/class/thermal/thermal_zone*"):
        try:
            with open(f"{zone}/temp") as f:
                celsius = int(f.read().strip()) / 1000.0
            with open(f"{zone}/type") as f:
                kind = f.read().strip().lower()
        except (OSError, ValueError):
            continue  # some zones (e.g. disabled sensors) refuse reads; others are enough
        temps.append(celsius)
        if "cpu" in kind or "x86_pkg" in kind:
            cpu_temps.append(celsius)
    chosen = cpu_temps or temps
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu_temp_c": max(chosen) if chosen else None, "load_1m": load, "cpu_count": os.cpu_count()}


class StatusPayload(_Payload):
    """Retained online/offline state; the Last Will carries ``offline`` with ``connection_lost``."""

    schema_: Literal[STATUS] = Field(STATUS, alias="schema")
    state: Literal["online", "offline"]
    reason: Literal["connected", "shutdown", "connection_lost"]
    client_id: str
    software_version: str


def status_payload(identity: Identity, state: str, reason: str, client_id: str,
                   now: float | None = None) -> StatusPayload:
    from factoryedge import __version__

    return _build(StatusPayload, **_common(STATUS, identity, now), state=state, reason=reason,
                  client_id=client_id, software_version=__version__)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SetThresholdArgs(_Args):
    threshold: float = Field(gt=0)


class RecalibrateArgs(_Args):
    duration_s: float | None = Field(None, gt=0)


class ReloadArgs(_Args):
    bundle: str | None = None


_ARGS: dict[str, type[_Args]] = {"set_threshold": SetThresholdArgs, "recalibrate": RecalibrateArgs,
                                 "reload": ReloadArgs}


@dataclass(frozen=True)
class Command:
    """A validated command; ``args`` holds the checked arguments (defaults filled in)."""

    command: str
    args: dict[str, Any]
    request_id: str | None = None


def parse_command(data: bytes | str) -> Command:
    """Parse a command message; raises ConfigError saying what was wrong and what is valid."""
    obj = _json_object(data, "command", COMMAND_EXAMPLE)
    schema = obj.pop("schema", COMMAND)
    if schema != COMMAND:
        raise ConfigError(f"command schema {schema!r} is not supported; this device speaks {COMMAND!r}")
    unknown = set(obj) - {"command", "args", "request_id"}
    if unknown:
        raise ConfigError(f"unknown command fields {sorted(unknown)}; valid: command, args, request_id, schema")
    name = obj.get("command")
    if name not in _ARGS:
        raise ConfigError(f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}; e.g. {COMMAND_EXAMPLE}")
    request_id = request_id_of(obj)
    args = obj.get("args") or {}
    if not isinstance(args, dict):
        raise ConfigError(f"command {name!r}: args must be a JSON object, got {args!r}")
    try:
        checked = _ARGS[name].model_validate(args)
    except ValidationError as e:
        raise ConfigError(f"command {name!r}: invalid args {args!r}: {_first_error(e)}") from None
    return Command(command=name, args=checked.model_dump(), request_id=request_id)


def request_id_of(obj: Any) -> str | None:
    """The request id of a (possibly malformed) command, so a rejection can still be matched."""
    if not isinstance(obj, dict):
        return None
    rid = obj.get("request_id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)) or len(str(rid)) > 128:
        raise ConfigError(f"request_id {rid!r} must be a string or integer of at most 128 characters")
    return str(rid)


@dataclass(frozen=True)
class CommandReply:
    """What a command handler answers: "ok", "accepted" (work goes on), "error" or "rejected"."""

    status: Literal["ok", "accepted", "error", "rejected"] = "ok"
    message: str = ""
    result: dict[str, Any] = field(default_factory=dict)


class CommandResponse(_Payload):
    """The answer to one command, matched to it by ``request_id``."""

    schema_: Literal[COMMAND_RESPONSE] = Field(COMMAND_RESPONSE, alias="schema")
    request_id: str | None
    command: str | None
    status: Literal["ok", "accepted", "error", "rejected"]
    message: str = ""
    result: dict[str, Any] = Field(default_factory=dict)


def command_response(identity: Identity, *, request_id: str | None, command: str | None, status: str,
                     message: str = "", result: dict[str, Any] | None = None,
                     now: float | None = None) -> CommandResponse:
    return _build(CommandResponse, **_common(COMMAND_RESPONSE, identity, now), request_id=request_id,
                  command=command, status=status, message=message, result=result or {})


_BY_SCHEMA: dict[str, type[_Payload]] = {ANOMALY: AnomalyPayload, TELEMETRY: TelemetryPayload,
                                         HEALTH: HealthPayload, STATUS: StatusPayload,
                                         COMMAND_RESPONSE: CommandResponse}


def parse_payload(data: bytes | str) -> _Payload:
    """Parse any published payload (consumer side); unknown fields are ignored, as promised."""
    obj = _json_object(data, "payload", '{"schema": "factoryedge.anomaly/1", ...}')
    schema = obj.get("schema")
    cls = _BY_SCHEMA.get(schema)
    if cls is None:
        raise ConfigError(f"unknown payload schema {schema!r}; known: {', '.join(sorted(_BY_SCHEMA))}")
    known = {f.alias or name for name, f in cls.model_fields.items()}
    try:
        return cls.model_validate({k: v for k, v in obj.items() if k in known})
    except ValidationError as e:
        raise ConfigError(f"invalid {schema} payload: {_first_error(e)}") from None


def _build(cls: type[_Payload], **fields: Any):
    try:
        return cls.model_validate(fields)
    except ValidationError as e:
        raise ConfigError(f"invalid {fields.get('schema')} payload: {_first_error(e)}") from None


def _json_object(data: bytes | str, what: str, example: str) -> dict[str, Any]:
    shown = data[:200]
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{what} {shown!r} is not valid UTF-8 JSON ({e}); e.g. {example}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} {shown!r} must be a JSON object; e.g. {example}")
    return obj


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "value"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"
