"""Who is speaking and on which topics: the machine identity and the topic scheme.

Converted once, from the profile's ``identity`` section (which *is* this class, validated by
pydantic), and handed to the sink and to every payload builder.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import ConfigDict, Field

from factoryedge.errors import ConfigError

# Plain ASCII segments: PLC and SCADA MQTT clients often mishandle spaces or UTF-8 in topics,
# and '+', '#' and '/' would change what a subscription matches.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROOT = "factoryedge"
# The same rule as a pydantic constraint, so a profile's error names the key (identity.machine).
Segment = Annotated[str, Field(pattern=f"^{_SEGMENT.pattern}$")]


class SegmentError(ConfigError, ValueError):
    """A name that cannot be a topic segment (a ValueError too, so pydantic reports its key path)."""


def check_segment(name: str, value: str) -> str:
    """A topic segment (site, line, machine, device id) or a ConfigError saying what is allowed."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise SegmentError(
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
    """Which machine a device watches, and which device it is: the topic path and payload fields.

    This is also the profile's ``identity:`` section (site, line, machine, device_id).
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    site: Segment
    line: Segment
    machine: Segment
    device_id: Segment

    def __post_init__(self):
        for name in ("site", "line", "machine", "device_id"):
            check_segment(name, getattr(self, name))

    def fields(self) -> dict[str, str]:
        return {"device_id": self.device_id, "site": self.site, "line": self.line, "machine": self.machine}


@dataclass(frozen=True)
class Topics:
    """Every topic of one machine, all under ``base`` = ``<root>/v1/<site>/<line>/<machine>``."""

    base: str
    anomaly: str
    telemetry: str
    health: str
    status: str
    command: str
    command_response: str
    trigger: str
    trigger_error: str
    decision: str

    @classmethod
    def for_identity(cls, identity: Identity, root: str = ROOT) -> Topics:
        parts = root.split("/")
        for part in parts:
            check_segment("topic root", part)
        b = "/".join([*parts, "v1", identity.site, identity.line, identity.machine])
        return cls(b, f"{b}/event/anomaly", f"{b}/telemetry/score", f"{b}/health", f"{b}/status",
                   f"{b}/command", f"{b}/command/response", f"{b}/trigger", f"{b}/trigger/error", f"{b}/decision")
