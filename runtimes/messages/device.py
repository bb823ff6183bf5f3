"""Device payloads: health reports and the retained online/offline status (the Last Will)."""
from __future__ import annotations

import os
from glob import glob
from typing import Any, Literal

from pydantic import Field

from factoryedge import __version__
from factoryedge.runtimes.messages.base import Payload, build, common
from factoryedge.runtimes.messages.identity import Identity

HEALTH = "factoryedge.health/1"
STATUS = "factoryedge.status/1"


class HealthPayload(Payload):
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
    outbox_full: int | None = Field(None, ge=0)  # events the outbox could not store since start (a full disk)
    oldest_undelivered_s: float | None = Field(None, ge=0)
    mqtt_reconnects: int | None = None
    mqtt_auth_failures: int | None = Field(None, ge=0)
    mqtt_tls_failures: int | None = Field(None, ge=0)
    inference_ms_p50: float | None = Field(None, ge=0)
    inference_ms_p99: float | None = Field(None, ge=0)
    commands_refused: int | None = Field(None, ge=0)
    source_stats: dict[str, int] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def health_payload(identity: Identity, *, uptime_s: float, now: float | None = None,
                   measure_system: bool = True, **fields: Any) -> HealthPayload:
    """Build a health report; with ``measure_system`` CPU temperature and load are read here."""
    if measure_system:
        for key, value in system_metrics().items():
            fields.setdefault(key, value)
    return build(HealthPayload, **common(HEALTH, identity, now), uptime_s=uptime_s, **fields)


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


class StatusPayload(Payload):
    """Retained online/offline state; the Last Will carries ``offline`` with ``connection_lost``.

    An ``online`` status carries ``expiry_s`` and ``refresh_s``: the device re-publishes it
    every ``refresh_s`` while connected, and it is worth nothing once ``expiry_s`` old (the
    broker also drops it then, as MQTT 5 message expiry). The Will cannot fire when the
    broker itself is down as the device dies (a plant-wide power cut where the broker comes
    back first), so only the age tells a consumer that such a device is gone. Offline
    statuses stay until the device returns: both are null there.
    """

    schema_: Literal[STATUS] = Field(STATUS, alias="schema")
    state: Literal["online", "offline"]
    reason: Literal["connected", "shutdown", "connection_lost"]
    client_id: str
    software_version: str
    expiry_s: float | None = Field(None, gt=0)
    refresh_s: float | None = Field(None, gt=0)


def status_payload(identity: Identity, state: str, reason: str, client_id: str,
                   now: float | None = None, expiry_s: float | None = None,
                   refresh_s: float | None = None) -> StatusPayload:
    return build(StatusPayload, **common(STATUS, identity, now), state=state, reason=reason,
                  client_id=client_id, software_version=__version__, expiry_s=expiry_s, refresh_s=refresh_s)
