"""A Sparkplug B listener for the bench: subscribes to ``spBv1.0/...`` and prints one line per message.

    NBIRTH  G1/edge-7            seq 0   bdSeq 3 | bdSeq=3 Node Control/Rebirth=false ...
    DDATA   G1/edge-7/pump-7     seq 5   | Anomaly/Score=2.31 Anomaly/Active=true

What a SCADA host would receive, decoded with the edge node's own schema (so it needs the
``sparkplug`` extra, and paho from ``device``). STATE messages (JSON) are printed as they
are. A payload that does not decode is shown as such, never ends the listener.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError
from factoryedge.runtimes.plant import sparkplug_schema as schema
from factoryedge.runtimes.sinks.paho_client import import_paho

log = logging.getLogger(__name__)
MAX_VALUE_CHARS = 60


def describe(topic: str, data: bytes) -> str:
    """One readable line for a message on a ``spBv1.0/`` topic."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[1] == "STATE":
        return f"STATE   {parts[2]:<20} {data[:200].decode(errors='replace')}"
    if len(parts) < 4:
        return f"?       {topic} ({len(data)} bytes)"
    kind, where = parts[2], "/".join([parts[1], *parts[3:]])
    try:
        payload = schema.decode(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and, for some inputs, others
        return f"{kind:<7} {where:<20} not a Sparkplug B payload ({type(e).__name__}, {len(data)} bytes)"
    seq = f"seq {payload.seq:<3}" if payload.HasField("seq") else "seq -  "
    values = {m.name or f"alias {m.alias}": schema.get_value(m) for m in payload.metrics}
    bdseq = f" bdSeq {values['bdSeq']}" if "bdSeq" in values else ""
    pairs = " ".join(f"{name}={_show(value)}" for name, value in values.items())
    return f"{kind:<7} {where:<20} {seq}{bdseq} | {pairs}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return json.dumps(text[:MAX_VALUE_CHARS]) if isinstance(value, str) else text


def topic_filter(group: str | None) -> str:
    """``spBv1.0/#`` or one group's messages plus every STATE."""
    return "spBv1.0/#" if group is None else f"spBv1.0/{group}/#"


def listen(broker: str, group: str | None = None, emit: Callable[[str], None] = print,
           ready: Callable[[], None] | None = None) -> Any:
    """Connect to ``mqtt://host:port`` and emit a line per message until the returned client is stopped.

    Runs paho's loop on its own thread; call ``client.loop_stop()`` (or ``listen_forever``) to end.
    """
    mqtt = import_paho()
    schema.payload_class()
    url = urlsplit(broker)
    if url.scheme != "mqtt" or not url.hostname:
        raise ConfigError(f"broker {broker!r} must look like mqtt://host:1883")
    topics = [(topic_filter(group), 0)] + ([("spBv1.0/STATE/+", 0)] if group is not None else [])
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

    def on_connect(c, _u, _f, reason, _p):
        if reason.is_failure:
            emit(f"# broker refused the connection: {reason}")
            return
        c.subscribe(topics)

    def on_subscribe(*_):
        emit(f"# listening to {', '.join(t for t, _ in topics)} on {broker}")
        if ready is not None:
            ready()

    def on_message(_c, _u, msg):
        try:
            emit(describe(msg.topic, msg.payload))
        except Exception:  # noqa: BLE001 - one odd message must not end the listener
            log.exception("could not show a message on %s", msg.topic)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.reconnect_delay_set(0.1, 5.0)
    client.connect_async(url.hostname, url.port or 1883)
    client.loop_start()
    return client
