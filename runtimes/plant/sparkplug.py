"""A Sparkplug B 3.0 edge node beside the JSON topics: the device's current state for SCADA hosts.

    LiveState --(every report_interval_s: changed values)--> DDATA  spBv1.0/<group>/DDATA/<node>/<machine>
    NCMD "Node Control/Rebirth" = true --> NBIRTH + DBIRTH again (same bdSeq, seq from 0)
    DCMD "Model/Threshold" = <Double>  --> execute("set_threshold") --> the next DDATA shows it

Its own MQTT session (client id ``<edge_node_id>-spb``), on the ``sparkplug`` section's broker
or else the ``mqtt`` section's (URI, TLS and credential options alike), with a clean session
as the specification requires. Session rules followed:

- The Will is an NDEATH carrying ``bdSeq`` (Int64), QoS 1, not retained. ``bdSeq`` grows by
  one on every CONNECT (reconnects and process restarts too; it wraps 255 -> 0) and is kept
  in ``sparkplug-<group>-<node>.bdseq.json`` next to the outbox.
- NCMD, DCMD (and the primary host's STATE) are subscribed, and the subscription
  acknowledged, before NBIRTH (seq 0) and one DBIRTH for the machine; then DDATA. ``seq``
  grows by one per message and wraps 255 -> 0. BIRTH and DATA go out at QoS 0, as the
  specification requires: a missed DDATA is healed by the next change or a Rebirth.
- With ``primary_host_id``: no BIRTH until ``spBv1.0/STATE/<id>`` says ``{"online": true,
  "timestamp": ...}`` (STATE messages older than the last one are ignored). When the host
  goes offline the node publishes NDEATH, disconnects and connects again (a new bdSeq),
  then waits for the host once more.
- ``close()`` publishes NDEATH (QoS 1, waited for) before it disconnects.

Commands that cannot be decoded, or that name a metric that is unknown or not writable,
are logged (at most one warning per ``WARN_EVERY_S``) and counted in the metric
``Health/Sparkplug Commands Refused``. Everything runs on the node's own threads and every
failure is logged: the node never stops or slows scoring.
"""
from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from typing import Any

from factoryedge.runtimes.plant import sparkplug_metrics as sm
from factoryedge.runtimes.plant import sparkplug_schema as schema
from factoryedge.runtimes.plant.sparkplug_state import BdSeqStore, parse_state
from factoryedge.runtimes.sinks.mqtt_config import parse_mqtt_uri
from factoryedge.runtimes.sinks.paho_client import import_paho, make_client, no_delay

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
WARN_EVERY_S = 10.0
NDEATH_WAIT_S = 5.0
# options of the JSON sink that mean nothing to the Sparkplug session (its own client id too:
# reusing the sink's would make the broker drop one of the two connections)
_SINK_ONLY = ("client_id", "outbox", "max_pending", "qos", "topic_root")


class SparkplugNode:
    """See the module doc. ``execute(name, args, origin)`` runs a command as the program's MQTT commands do."""

    def __init__(self, profile: Any, live: Any, execute: Any) -> None:
        self.cfg = profile.sparkplug
        self.live = live
        self.execute = execute
        self.identity = profile.identity
        self.device = profile.identity.machine
        group, node = self.cfg.group_id, self.cfg.edge_node_id
        base = f"{NAMESPACE}/{group}"
        self.topics = {kind: f"{base}/{kind}/{node}" for kind in ("NBIRTH", "NDEATH", "NDATA", "NCMD")}
        self.topics.update({kind: f"{base}/{kind}/{node}/{self.device}" for kind in ("DBIRTH", "DDATA", "DCMD")})
        self.dcmd_filter = f"{base}/DCMD/{node}/+"
        self.state_topic = f"{NAMESPACE}/STATE/{self.cfg.primary_host_id}" if self.cfg.primary_host_id else None
        options = dict(profile.mqtt.options if self.cfg.options is None else self.cfg.options)
        if self.cfg.options is None:
            options = {k: v for k, v in options.items() if k not in _SINK_ONLY}
        options.setdefault("client_id", re.sub(r"[^A-Za-z0-9._-]", "-", node) + "-spb")  # ':' is a valid node id
        self.settings = parse_mqtt_uri(self.cfg.uri or profile.mqtt.uri, identity=profile.identity, **options).mqtt
        self.bdseq = BdSeqStore(profile.mqtt.outbox.parent / f"sparkplug-{group}-{node}.bdseq.json")
        self.refused = 0
        self.device_specs = sm.device_metrics(live.kind, lambda: self.refused)
        self.node_specs = sm.node_metrics(profile.identity, live.kind)
        self._writable = {s.name: s for s in self.device_specs if s.writable}
        self._client: Any = None
        self._mqtt: Any = None
        self._lock = threading.RLock()  # one publisher at a time: seq must follow the wire order
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._commands: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=1000)
        self._worker: threading.Thread | None = None
        self._session_bdseq: int | None = None
        self._connect_failed = False
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._host_online = self.state_topic is None
        self._host_seen_online = False  # in this session: only a host that was online can go offline
        self._host_timestamp: float | None = None
        self._restart_session = False
        self._ending = False  # our own DISCONNECT: no warning for it
        self._rebirth = False
        self._birthed = False
        self._seq = 0
        self._sent: dict[str, Any] = {}
        self._next_report = 0.0
        self._warned_at = -math.inf
        self._suppressed = 0
        self.births = 0  # BIRTH sequences sent (for the tests and the log)
        self.connect_failures = 0  # connection attempts that never reached a broker

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> SparkplugNode:
        """Connect in the background (retrying with backoff) and start the reporting thread."""
        self._mqtt = import_paho()
        schema.payload_class()  # a missing protobuf is reported now, naming the extra
        self._client = make_client(self._mqtt, self.settings, self.topics["NDEATH"], b"")
        self._client.on_pre_connect = self._on_pre_connect
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._connect()
        self._worker = threading.Thread(target=self._run, name="factoryedge-sparkplug", daemon=True)
        self._worker.start()
        log.info("sparkplug edge node %s/%s (device %s) connecting to %s:%d%s", self.cfg.group_id,
                 self.cfg.edge_node_id, self.device, self.settings.host, self.settings.port,
                 f", waiting for primary host {self.cfg.primary_host_id}" if self.state_topic else "")
        return self

    def close(self) -> None:
        """Stop reporting, publish NDEATH (QoS 1, waited for) and disconnect."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
        if self._client is None:
            return
        with self._lock:
            self._end_session("shutdown")
        self._client.loop_stop()
        self._client = None

    # -- the reporting thread --------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.0, min(1.0, self._next_report - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the node must keep running whatever one round did
                log.exception("sparkplug: reporting round failed")

    def _step(self) -> None:
        while True:
            try:
                kind, data = self._commands.get_nowait()
            except queue.Empty:
                break
            self._command(kind, data)
        if self._restart_session:
            self._restart_session = False
            with self._lock:
                self._end_session("primary host offline")
            self._client.loop_stop()
            self._connect()
            return
        if not (self._connected and self._subscribed and self._host_online):
            return
        if not self._birthed or self._rebirth:
            self.birth()
        elif time.monotonic() >= self._next_report:
            self.report_now()

    def birth(self) -> None:
        """NBIRTH (seq 0, this session's bdSeq) and the machine's DBIRTH, with every current value."""
        with self._lock:
            self._rebirth = False
            now = _now_ms()
            nbirth = schema.new_payload()
            nbirth.timestamp, nbirth.seq = now, 0
            self._add(nbirth, sm.BDSEQ_SPEC, self._session_bdseq, now, birth=True)
            self._add(nbirth, sm.REBIRTH_SPEC, False, now, birth=True)
            for spec in self.node_specs:
                self._add(nbirth, spec, spec.read(self.live), now, birth=True)
            self._seq = 0
            if not self._publish("NBIRTH", nbirth):
                return
            values = self._read()
            dbirth = schema.new_payload()
            dbirth.timestamp = now
            for spec in self.device_specs:
                self._add(dbirth, spec, values[spec.name], now, birth=True)
            dbirth.seq = self._next_seq()
            if not self._publish("DBIRTH", dbirth):
                return
            self._sent = values
            self._birthed = True
            self.births += 1
            self._next_report = time.monotonic() + self.cfg.report_interval_s
            log.info("sparkplug: NBIRTH and DBIRTH sent (bdSeq %s)", self._session_bdseq)

    def report_now(self) -> bool:
        """Send the metrics that changed since the last BIRTH or DDATA; False when nothing went out."""
        with self._lock:
            self._next_report = time.monotonic() + self.cfg.report_interval_s
            if not self._birthed:
                return False
            values = self._read()
            changed = [s for s in self.device_specs if values[s.name] != self._sent.get(s.name)]
            if not changed:
                return False
            now = _now_ms()
            ddata = schema.new_payload()
            ddata.timestamp = now
            for spec in changed:
                self._add(ddata, spec, values[spec.name], now, birth=False)
            ddata.seq = self._next_seq()
            if self._publish("DDATA", ddata):
                self._sent.update({s.name: values[s.name] for s in changed})
                return True
            return False

    def _read(self) -> dict[str, Any]:
        values = {}
        for spec in self.device_specs:
            try:
                values[spec.name] = spec.read(self.live)
            except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as e:
                # a counter resized by the program while read: keep what was sent, try next round
                log.debug("sparkplug: reading %s failed: %s", spec.name, e)
                values[spec.name] = self._sent.get(spec.name)
        return values

    def _add(self, payload: Any, spec: sm.MetricSpec, value: Any, now: int, *, birth: bool) -> None:
        metric = payload.metrics.add(name=spec.name, timestamp=now)
        if birth:  # the datatype and properties belong in BIRTHs only (the spec: SHOULD NOT in DATA)
            metric.datatype = spec.datatype
            if spec.unit is not None:
                metric.properties.keys.append("engUnit")
                schema.set_value(metric.properties.values.add(type=schema.STRING), schema.STRING, spec.unit)
        schema.set_value(metric, spec.datatype, value)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def _publish(self, kind: str, payload: Any, qos: int = 0) -> Any:
        data = payload if isinstance(payload, bytes) else payload.SerializeToString()
        info = self._client.publish(self.topics[kind], data, qos=qos, retain=False)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            # lost the connection meanwhile: the reconnect (a new bdSeq) births afresh
            self._birthed = False
            log.debug("sparkplug: %s not sent (rc %s)", kind, info.rc)
            return None
        return info

    def _end_session(self, why: str) -> None:
        """NDEATH with this session's bdSeq (QoS 1, waited for), then DISCONNECT (MQTT 5: with the Will)."""
        self._birthed = False
        self._ending = True
        if not self._connected or self._session_bdseq is None:
            self._client.disconnect()  # stops paho's connection attempts; nothing to say on the wire
            return
        info = self._publish("NDEATH", self._death(self._session_bdseq), qos=1)
        try:
            if info is not None:
                info.wait_for_publish(timeout=NDEATH_WAIT_S)
        except (RuntimeError, ValueError) as e:
            log.warning("sparkplug: NDEATH not confirmed: %s", e)
        reason = None
        if self.settings.protocol == "5":
            # Sparkplug 3.0 with MQTT 5: a DISCONNECT must ask for the Will (reason 0x04)
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.reasoncodes import ReasonCode
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=4)
        self._client.disconnect(reasoncode=reason)
        log.info("sparkplug: session ended (%s) with NDEATH bdSeq %s", why, self._session_bdseq)

    # -- MQTT callbacks (paho's network thread: flags and queues only) -----------------------

    def _connect(self) -> None:
        kwargs = {"clean_start": True} if self.settings.protocol == "5" else {}
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive, **kwargs)
        self._client.loop_start()

    def _on_pre_connect(self, client: Any, userdata: Any) -> None:
        # every CONNECT carries a new bdSeq in its Will, kept on disk before it is used; an
        # attempt whose socket never opened sent no CONNECT, so the next one reuses its number
        if not self._connect_failed or self._session_bdseq is None:
            self._session_bdseq = self.bdseq.next()
        self._connect_failed = False
        client.will_set(self.topics["NDEATH"], self._death(self._session_bdseq), qos=1, retain=False)
        self._connected = self._subscribed = self._birthed = self._ending = False
        self._host_seen_online = False
        if self.state_topic is not None:
            self._host_online = False

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._connect_failed = True
        self.connect_failures += 1

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("sparkplug: broker refused the connection: %s", reason_code)
            return
        no_delay(client)
        self._connected = True
        topics = [(self.topics["NCMD"], 1), (self.dcmd_filter, 1)]
        if self.state_topic is not None:
            topics.append((self.state_topic, 1))
        _, self._sub_mid = client.subscribe(topics)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        if mid != self._sub_mid:
            return
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            log.error("sparkplug: subscription refused by the broker (%s); commands will not arrive", failed)
        self._subscribed = True
        self._wake.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        was = self._connected
        self._connected = self._birthed = False
        if was and not self._ending:
            log.warning("sparkplug: disconnected (%s); reconnecting with a new bdSeq", reason_code)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.state_topic:
            self._on_state(message.payload)
            return
        kind = "NCMD" if message.topic == self.topics["NCMD"] else "DCMD"
        if kind == "DCMD" and message.topic != self.topics["DCMD"]:
            self.refuse(f"DCMD for unknown device {message.topic.rsplit('/', 1)[-1]!r}; this node has "
                        f"{self.device!r}")
            return
        try:
            self._commands.put_nowait((kind, message.payload))
            self._wake.set()
        except queue.Full:
            self.refuse("command queue full (commands arrive faster than they run)")

    def _on_state(self, data: bytes) -> None:
        try:
            online, stamp = parse_state(data)
        except ValueError as e:
            self.refuse(str(e))
            return
        if self._host_timestamp is not None and stamp < self._host_timestamp:
            log.info("sparkplug: ignoring an older STATE (timestamp %s < %s)", stamp, self._host_timestamp)
            return
        self._host_timestamp = stamp
        log.info("sparkplug: primary host %s is %s", self.cfg.primary_host_id, "online" if online else "offline")
        if online:
            self._host_online = self._host_seen_online = True
        else:
            self._host_online = False
            if self._host_seen_online:
                self._restart_session = True
        self._wake.set()

    # -- commands (on the reporting thread) --------------------------------------------------

    def _command(self, kind: str, data: bytes) -> None:
        try:
            payload = schema.decode(data)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and its internals' errors alike
            self.refuse(f"{kind} of {len(data)} bytes is not a Sparkplug B payload ({type(e).__name__})")
            return
        for metric in payload.metrics:
            if not metric.name:
                self.refuse(f"{kind} metric with alias {metric.alias} but no name; this node uses names, not aliases")
            elif kind == "NCMD":
                self._node_command(metric)
            else:
                self._device_command(metric)

    def _node_command(self, metric: Any) -> None:
        if metric.name != sm.REBIRTH:
            self.refuse(f"NCMD metric {metric.name[:80]!r} is not writable; writable: {sm.REBIRTH!r}")
        elif schema.get_value(metric) is True:
            log.info("sparkplug: rebirth requested")
            self._rebirth = True

    def _device_command(self, metric: Any) -> None:
        spec = self._writable.get(metric.name)
        if spec is None:
            self.refuse(f"DCMD metric {metric.name[:80]!r} is unknown or not writable; writable: "
                        f"{', '.join(sorted(self._writable))}")
            return
        value = schema.get_value(metric, spec.datatype)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.refuse(f"DCMD {spec.name} needs a Double value, got {value!r}")
            return
        reply = self.execute("set_threshold", {"threshold": float(value)}, "sparkplug DCMD")
        if reply.status not in ("ok", "accepted"):
            self.refuse(f"DCMD {spec.name}={value!r}: {reply.status}: {reply.message}")
        self._next_report = 0.0  # show the new value at once

    def refuse(self, why: str) -> None:
        """Count a refused command or STATE; warn at most once per ``WARN_EVERY_S`` seconds."""
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
            log.warning("sparkplug: refused: %s%s", why, more)
            self._warned_at, self._suppressed = now, 0
        else:
            self._suppressed += 1
        self._wake.set()

    def _death(self, bdseq: int) -> bytes:
        payload = schema.new_payload()
        now = _now_ms()
        payload.timestamp = now
        self._add(payload, sm.BDSEQ_SPEC, bdseq, now, birth=True)
        return payload.SerializeToString()


def _now_ms() -> int:
    return int(time.time() * 1000)
