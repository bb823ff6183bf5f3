"""The one MQTT message contract: identity, every topic, every payload; documented in firmware-config/mqtt.md.

Free of transport details (no paho here), so the Sparkplug B encoding can sit beside it.

- ``identity``: ``Identity`` (also the profile's identity section), ``Topics``, ``iso_utc``.
- ``base``: what every payload shares, strict building, lenient parsing.
- ``monitoring``: anomaly events and score telemetry.
- ``inspection``: triggers, pass/reject decisions, trigger errors.
- ``device``: health and the retained online/offline status.
- ``commands``: commands and their responses.

``parse_payload`` reads any published payload by its ``schema``.
"""
from __future__ import annotations

from factoryedge.errors import ConfigError
from factoryedge.runtimes.messages.base import Payload, json_object, parse_as
from factoryedge.runtimes.messages.commands import (
    COMMAND,
    COMMAND_EXAMPLE,
    COMMAND_RESPONSE,
    COMMANDS,
    MAX_COMMAND_BYTES,
    MAX_COMMAND_DEPTH,
    Command,
    CommandRefused,
    CommandReply,
    CommandResponse,
    bounded_command_text,
    command_response,
    parse_command,
    request_id_of,
    scan_request_id,
)
from factoryedge.runtimes.messages.device import (
    HEALTH,
    STATUS,
    HealthPayload,
    StatusPayload,
    health_payload,
    status_payload,
    system_metrics,
)
from factoryedge.runtimes.messages.identity import Identity, SegmentError, Topics, check_segment, iso_utc
from factoryedge.runtimes.messages.inspection import (
    DECISION,
    MAX_PART_ID,
    REASONS,
    TRIGGER_ERROR,
    DecisionPayload,
    TriggerErrorPayload,
    check_part_id,
    decision_payload,
    parse_decision,
    parse_trigger,
    trigger_error_payload,
)
from factoryedge.runtimes.messages.monitoring import (
    ANOMALY,
    TELEMETRY,
    AnomalyPayload,
    Severity,
    TelemetryPayload,
    anomaly_from_event,
    anomaly_payload,
    telemetry_payload,
)
from factoryedge.signed_commands import SIGNED_COMMAND

BY_SCHEMA: dict[str, type[Payload]] = {
    ANOMALY: AnomalyPayload, TELEMETRY: TelemetryPayload, HEALTH: HealthPayload, STATUS: StatusPayload,
    COMMAND_RESPONSE: CommandResponse, DECISION: DecisionPayload, TRIGGER_ERROR: TriggerErrorPayload,
}
# Schemas a device receives rather than publishes; documented in mqtt.md too.
RECEIVED = (COMMAND, SIGNED_COMMAND)


def parse_payload(data: bytes | str) -> Payload:
    """Parse any published payload (consumer side); unknown fields are ignored, as promised."""
    obj = json_object(data, "payload", '{"schema": "factoryedge.anomaly/1", ...}')
    schema = obj.get("schema")
    cls = BY_SCHEMA.get(schema)
    if cls is None:
        raise ConfigError(f"unknown payload schema {schema!r}; known: {', '.join(sorted(BY_SCHEMA))}")
    return parse_as(cls, obj)


__all__ = [
    "ANOMALY", "BY_SCHEMA", "COMMAND", "COMMANDS", "COMMAND_EXAMPLE", "COMMAND_RESPONSE", "DECISION", "HEALTH",
    "MAX_COMMAND_BYTES", "MAX_COMMAND_DEPTH", "MAX_PART_ID", "REASONS", "RECEIVED", "STATUS", "TELEMETRY",
    "TRIGGER_ERROR", "AnomalyPayload", "Command",
    "CommandRefused", "CommandReply", "CommandResponse", "DecisionPayload", "HealthPayload", "Identity", "Payload",
    "SegmentError",
    "Severity", "StatusPayload", "TelemetryPayload", "Topics", "TriggerErrorPayload", "anomaly_from_event",
    "anomaly_payload", "bounded_command_text",
    "check_part_id", "check_segment", "command_response", "decision_payload", "health_payload",
    "iso_utc", "parse_command", "parse_decision", "parse_payload", "parse_trigger", "request_id_of",
    "scan_request_id", "status_payload", "system_metrics", "telemetry_payload", "trigger_error_payload",
]
