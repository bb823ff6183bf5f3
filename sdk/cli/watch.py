"""``factoryedge watch``: print what devices publish, as a plant system would receive it."""
from __future__ import annotations

import argparse
import json
from urllib.parse import urlsplit

from factoryedge.errors import ConfigError, missing_dependency


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("broker", help="mqtt://host:port")
    p.add_argument("--topic", action="append",
                   help="topic filter (default: every factoryedge anomaly, sorting decision and status)")
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="3.1.1")
    p.add_argument("--raw", action="store_true", help="print the JSON payloads as received")


def describe(topic: str, payload: bytes) -> str:
    """One readable line per message."""
    try:
        m = json.loads(payload)
    except ValueError:
        return f"{topic} {payload[:200]!r}"
    schema = m.get("schema", "")
    where = "/".join(str(m.get(k, "?")) for k in ("site", "line", "machine"))
    if schema.startswith("factoryedge.anomaly"):
        top = ", ".join(m.get("details", {}).get("top_contributors", {}))
        return (f"ANOMALY {m['state']:<9} {m['severity']:<8} {where} score {m['score']:.3g} "
                f"(threshold {m['threshold']:.3g}) window {m['window_start_utc']} event {m['event_id'][:8]}"
                + (f" | most deviant: {top}" if top else ""))
    if schema.startswith("factoryedge.decision"):
        score = "-" if m.get("score") is None else f"{m['score']:.3g}"
        return (f"DECISION {m['part_id']:<10} {m['verdict'].upper():<6} ({m['reason']}) {where} score {score} "
                f"(threshold {m['threshold']:.3g}) latency {m['latency_ms']:.1f} ms of {m['deadline_ms']:g}"
                + (f" | {m['detail']}" if m.get("detail") else ""))
    if schema.startswith("factoryedge.trigger_error"):
        return f"TRIGGER-ERROR {where} {m.get('error')}"
    if schema.startswith("factoryedge.status"):
        return f"STATUS  {where} {m['state']} ({m['reason']})"
    return f"{topic} {json.dumps(m)[:300]}"


def run(args: argparse.Namespace) -> int:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise missing_dependency("paho.mqtt", "device", "watching MQTT") from None
    url = urlsplit(args.broker)
    if url.scheme != "mqtt" or not url.hostname:
        raise ConfigError(f"broker {args.broker!r} must look like mqtt://host:1883")
    topics = args.topic or ["factoryedge/v1/+/+/+/event/anomaly", "factoryedge/v1/+/+/+/decision",
                            "factoryedge/v1/+/+/+/trigger/error", "factoryedge/v1/+/+/+/status"]
    proto = mqtt.MQTTv5 if args.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=proto)

    def on_connect(c, _u, _f, reason, _p):
        c.subscribe([(t, 1) for t in topics])

    def on_subscribe(*_):
        print(f"subscribed to {', '.join(topics)} on {args.broker}", flush=True)

    def on_message(_c, _u, msg):
        print(msg.payload.decode(errors="replace") if args.raw else describe(msg.topic, msg.payload), flush=True)

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect_async(url.hostname, url.port or 1883)
    try:
        client.loop_forever(retry_first_connection=True)
    except KeyboardInterrupt:
        pass
    return 0

