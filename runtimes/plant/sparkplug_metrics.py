"""What the Sparkplug edge node publishes: node and device metrics with their datatypes and units.

Each metric reads its value from the program's ``LiveState``; the node compares these
values every report interval and sends the changed ones as DDATA. A value the device does
not know yet (no score before the first window, no decision before the first part) is sent
as a null metric (``is_null``), as the specification asks, never as a made-up 0.

Units go into each BIRTH metric's PropertySet as ``engUnit`` (a String property): the
specification defines no unit property; ``engUnit`` is the name Ignition's MQTT Engine and
most SCADA hosts map to a tag's engineering unit.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from factoryedge import __version__
from factoryedge.runtimes.plant.sparkplug_schema import BOOLEAN, DOUBLE, INT64, STRING, UINT64

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
THRESHOLD = "Model/Threshold"
COMMANDS_REFUSED = "Health/Sparkplug Commands Refused"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its Sparkplug name, datatype, engineering unit, and how to read it."""

    name: str
    datatype: int
    read: Callable[[Any], Any]
    unit: str | None = None
    writable: bool = False


def _card(field: str) -> Callable[[Any], Any]:
    return lambda live: getattr(live.card, field) if live.card is not None else None


def _health(field: str) -> Callable[[Any], Any]:
    def read(live: Any) -> Any:
        value = live.health.get(field)
        return None if value is None else int(value)
    return read


def _decision(field: str) -> Callable[[Any], Any]:
    return lambda live: (live.last_decision or {}).get(field)


def _events(live: Any) -> int:
    return live.events_total()


def _float(read: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def as_float(live: Any) -> Any:
        value = read(live)
        return None if value is None else float(value)
    return as_float


COMMON = (
    MetricSpec("Model/Name", STRING, _card("name")),
    MetricSpec("Model/Version", STRING, _card("version")),
    MetricSpec(THRESHOLD, DOUBLE, _float(lambda live: live.threshold), writable=True),
    MetricSpec("Anomaly/Score", DOUBLE, _float(lambda live: live.last_score)),
    MetricSpec("Anomaly/Active", BOOLEAN, lambda live: bool(live.anomaly_active)),
    MetricSpec("Anomaly/Severity", STRING, lambda live: live.severity),
    MetricSpec("Anomaly/Events", UINT64, _events, unit="events"),
    MetricSpec("Health/Outbox Depth", UINT64, _health("outbox_depth"), unit="messages"),
    MetricSpec("Health/Dropped Frames", UINT64, _health("dropped_frames"), unit="frames"),
    MetricSpec("Health/MQTT Reconnects", UINT64, _health("mqtt_reconnects"), unit="reconnects"),
)
MONITORING = (
    MetricSpec("Scoring/Windows Scored", UINT64, lambda live: int(live.windows_scored), unit="windows"),
)
INSPECTION = (
    MetricSpec("Inspection/Parts Scored", UINT64, lambda live: int(live.windows_scored), unit="parts"),
    MetricSpec("Inspection/Last Part ID", STRING, _decision("part_id")),
    MetricSpec("Inspection/Last Verdict", STRING, _decision("verdict")),
    MetricSpec("Inspection/Last Reason", STRING, _decision("reason")),
    MetricSpec("Inspection/Last Score", DOUBLE, _float(_decision("score"))),
    MetricSpec("Inspection/Last Latency", DOUBLE, _float(_decision("latency_ms")), unit="ms"),
    MetricSpec("Inspection/Passed", UINT64, lambda live: live.verdicts()["pass"], unit="parts"),
    MetricSpec("Inspection/Rejected", UINT64, lambda live: live.verdicts()["reject"], unit="parts"),
)


def device_metrics(kind: str, refused: Callable[[], int]) -> tuple[MetricSpec, ...]:
    """The device's metrics for a program ``kind``; ``refused`` counts the node's refused commands."""
    own = (MetricSpec(COMMANDS_REFUSED, UINT64, lambda live: refused(), unit="commands"),)
    return COMMON + (INSPECTION if kind == "inspection" else MONITORING) + own


def node_metrics(identity: Any, kind: str) -> tuple[MetricSpec, ...]:
    """The NBIRTH's fixed metrics after ``bdSeq`` and ``Node Control/Rebirth``: who this edge node is."""
    return (
        MetricSpec("Node Info/Software", STRING, lambda live: f"factoryedge {__version__}"),
        MetricSpec("Node Info/Program", STRING, lambda live: kind),
        MetricSpec("Node Info/Device ID", STRING, lambda live: identity.device_id),
        MetricSpec("Node Info/Site", STRING, lambda live: identity.site),
        MetricSpec("Node Info/Line", STRING, lambda live: identity.line),
    )


BDSEQ_SPEC = MetricSpec(BDSEQ, INT64, lambda live: None)
REBIRTH_SPEC = MetricSpec(REBIRTH, BOOLEAN, lambda live: False, writable=True)
