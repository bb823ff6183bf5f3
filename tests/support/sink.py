"""One identity, its topics and URI builder for tests that drive an ``MqttSink`` directly."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from factoryedge.runtimes.messages import Identity, Topics

IDENTITY = Identity(site="plant1", line="press3", machine="m7", device_id="edge-test")
TOPICS = Topics.for_identity(IDENTITY)
# A child process that publishes through an MqttSink (killed by the fault tests).
PUBLISHER = Path(__file__).parents[1] / "runtimes" / "sinks" / "_publisher.py"


def sink_uri(broker, outbox: Path, **options) -> str:
    """The URI of a sink on ``broker`` with ``outbox`` and fast reconnects, plus ``options``."""
    opts = {"site": IDENTITY.site, "line": IDENTITY.line, "machine": IDENTITY.machine,
            "device_id": IDENTITY.device_id, "outbox": str(outbox),
            "reconnect_min": "0.05", "reconnect_max": "0.5", **options}
    return f"{broker.url}?{urlencode(opts)}"
