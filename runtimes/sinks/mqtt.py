"""MQTT sink with store-and-forward: an anomaly event, once accepted, is delivered at least once.

``publish_event`` commits the message to the on-disk outbox before returning; with
``wait=False`` it returns a ``Receipt`` at once and the message is accepted when the receipt
is done (``outbox_writer``: one writer thread commits everything handed over together in one
transaction, so a burst costs one fsync, not one per event). A drainer thread (``drainer``)
sends committed rows whenever the client is connected, at most ``max_inflight`` at a
time, and marks a row delivered only when its PUBACK (QoS 1) or PUBCOMP (QoS 2) arrives. On
a disconnect the unacknowledged rows are sent again after reconnecting, and a new process
on the same outbox file first sends what a crashed one left, so a message may arrive twice:
consumers de-duplicate by ``event_id`` (see ``firmware-config/mqtt.md``).

Telemetry and health (``publish_telemetry``) go out at QoS 0 and are not persisted: a lost
sample is replaced by the next one. The retained ``status`` topic says ``online`` after
every (re)connect, with a message expiry, refreshed while connected (``status``: so a device
that died while the broker was down does not stay ``online``); the Last Will sets it to
``offline`` (reason ``connection_lost``) when the device vanishes, and ``close`` sets it to
``offline`` (reason ``shutdown``).

paho-mqtt is imported when a sink is opened, never when this module is imported (``paho_client``).
Threads: paho's network thread only queues work (no disk I/O there), the writer owns every
write to the outbox, the drainer owns the mid -> row map and never waits on the disk, and
commands run on a worker thread of their own (``commands``).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factoryedge.errors import ConfigError, SinkError
from factoryedge.runtimes import messages as msg

from .commands import CommandCallback, CommandDispatcher
from .drainer import Drainer
from .mqtt_config import MqttConfig, parse_mqtt_uri
from .outbox import Message, Outbox
from .outbox_writer import OutboxWriter, Receipt
from .paho_client import diagnose_tls, import_paho, make_client, no_delay
from .status import StatusKeeper
from .trigger_session import STATION_RECONNECT_MAX_S, TriggerSession
from .unstored import Unstored

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkStats:
    """Counters since the sink was opened, plus the current outbox depth."""

    connected: bool
    events_put: int
    published: int
    acked: int
    rejected: int
    reconnects: int
    connect_failures: int
    telemetry_sent: int
    telemetry_dropped: int
    commands: int
    outbox_depth: int
    outbox_over_limit: int
    store_failed: int = 0  # events handed over with wait=False that the outbox could not store
    commands_refused: int = 0  # commands answered "rejected" (malformed, over the limits, unknown, refused)
    oldest_undelivered_s: float | None = None  # age of the oldest event still waiting in the outbox
    auth_failures: int = 0  # connections the broker refused (bad user name or password, not authorised)
    tls_failures: int = 0  # connection attempts that failed in the TLS handshake (see the logged reason)
    unstored_sent: int = 0  # of store_failed, events sent directly instead (at most once; ``unstored``)


class MqttSink:
    """Publishes one machine's events, telemetry and status to a broker; see the module doc."""

    def __init__(self, config: MqttConfig, identity: msg.Identity, outbox: Outbox | str | Path):
        mqtt = import_paho()
        self.config = config
        self.identity = identity
        self.topics = msg.Topics.for_identity(identity, config.topic_root)
        self._owns_outbox = not isinstance(outbox, Outbox)
        self.outbox = Outbox(outbox) if self._owns_outbox else outbox
        self._dispatcher: CommandDispatcher | None = None
        self._subscriptions: dict[str, int] = {}  # topic -> qos, renewed on every connect
        self._progress = threading.Condition()
        self._counts = dict.fromkeys(("events_put", "published", "acked", "rejected", "connects",
                                      "connect_failures", "telemetry_sent", "telemetry_dropped",
                                      "auth_failures", "tls_failures"), 0)
        self._tls_problem: str | None = None  # the last diagnosed TLS failure, until a connect succeeds
        self._connected = False
        self._closing = False
        self._closed = False
        self._final_depth = 0
        self._status = StatusKeeper(config, identity, self.topics.status)
        self._client = self._status.client = make_client(mqtt, config, self.topics.status, self._status.will())
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        depth = self.outbox.depth()
        if depth:
            log.info("mqtt outbox holds %d undelivered messages from an earlier run path=%s", depth, self.outbox.path)
        self._drainer = Drainer(self._client, self.outbox, config.max_inflight, lambda ids: self._writer.mark(ids),
                                self._count, self._progressed)
        self._unstored = Unstored(self._send_unstored)
        self._writer = OutboxWriter(self.outbox, self._committed, self._unstored.handle)
        self._drainer.start()
        self._status.start()
        self._client.connect_async(config.host, config.port, config.keepalive,
                                   **({"clean_start": True} if config.protocol == "5" else {}))
        self._client.loop_start()
        log.info("mqtt sink opened host=%s port=%d tls=%s client_id=%s topics=%s outbox=%s", config.host,
                 config.port, config.tls, config.client_id, self.topics.base, self.outbox.path)

    @classmethod
    def from_uri(cls, uri: str, identity: msg.Identity | None = None, **options: Any) -> MqttSink:
        """Open a sink from ``mqtt://`` / ``mqtts://`` (options: ``mqtt_config.OPTIONS``).

        ``identity`` is the device's, converted once by the device program; without it the
        URI's site/line/machine/device_id options give it.
        """
        settings = parse_mqtt_uri(uri, identity=identity, **options)
        import_paho()  # before the outbox file is created
        outbox = Outbox(settings.outbox, max_pending=settings.max_pending, max_bytes=settings.max_bytes,
                        keep_delivered=settings.keep_delivered)
        try:
            sink = cls(settings.mqtt, settings.identity, outbox)
        except BaseException:
            outbox.close()
            raise
        sink._owns_outbox = True
        return sink

    @classmethod
    def validate(cls, uri: str, identity: msg.Identity | None = None, **options: Any) -> None:
        """Check the URI and every option without connecting, creating the outbox or reading secrets."""
        parse_mqtt_uri(uri, identity=identity, resolve_secrets=False, **options)

    # -- publishing ---------------------------------------------------------------------

    def publish_event(self, topic: str, payload: Any, retain: bool = False, wait: bool = True) -> int | Receipt | None:
        """Store a message in the outbox (durably) and queue it for sending; returns its row id.

        ``payload`` may be bytes, str, a dict (sent as JSON) or a payload model. If the outbox
        cannot store it (a full disk) it is sent directly while connected and None comes back
        (delivered at most once, see ``unstored``); if it is neither stored nor sent, SinkError.
        With ``wait=False`` it returns a ``Receipt`` without waiting for the disk:
        ``receipt.result()`` gives what the waiting call would (a failure is also logged and
        counted in ``stats().store_failed``); ``flush`` and ``close`` wait for every handed-over event.
        Events are committed and sent in the order of the calls either way.
        """
        if self._closed:
            raise SinkError(f"the MQTT sink to {self.config.host!r} is closed; open a new one to publish")
        receipt = self._writer.submit(_check_topic(topic), _encode(payload), self.config.qos, retain)
        return receipt.result() if wait else receipt

    def publish_anomaly(self, payload: msg.AnomalyPayload, wait: bool = True) -> int | Receipt | None:
        """``publish_event`` on this machine's ``event/anomaly`` topic."""
        return self.publish_event(self.topics.anomaly, payload, wait=wait)

    def publish_telemetry(self, topic: str, payload: Any) -> bool:
        """Send at QoS 0 if connected, without persisting (telemetry, health); False if dropped."""
        if not self._connected or self._closed:
            self._count("telemetry_dropped")
            return False
        info = self._client.publish(_check_topic(topic), _encode(payload), qos=0)
        ok = info.rc == 0
        self._count("telemetry_sent" if ok else "telemetry_dropped")
        return ok

    def flush(self, timeout: float) -> bool:
        """Wait until every handed-over event is committed and the outbox is empty; False at the timeout."""
        return self._wait(lambda: self._writer.idle() and self.outbox.depth() == 0, timeout)

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected to the broker (for start-up checks and tests)."""
        return self._wait(lambda: self._connected, timeout)

    def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._progress:  # notified by the drainer and on (dis)connect; 0.5 s is a safety net
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.wait(min(remaining, 0.5))
        return True

    def stats(self) -> SinkStats:
        with self._progress:
            c = dict(self._counts)
        closed = self._closed
        return SinkStats(connected=self._connected, events_put=c["events_put"], published=c["published"],
                         acked=c["acked"], rejected=c["rejected"], reconnects=max(0, c["connects"] - 1),
                         connect_failures=c["connect_failures"], telemetry_sent=c["telemetry_sent"],
                         telemetry_dropped=c["telemetry_dropped"],
                         commands=self._dispatcher.received if self._dispatcher else 0,
                         outbox_depth=self._final_depth if closed else self.outbox.depth(),
                         outbox_over_limit=self.outbox.over_limit, store_failed=self._writer.failed,
                         commands_refused=self._dispatcher.refused if self._dispatcher else 0,
                         auth_failures=c["auth_failures"], tls_failures=c["tls_failures"],
                         unstored_sent=self._unstored.sent,
                         oldest_undelivered_s=None if closed else self.outbox.oldest_age())

    def _count(self, name: str, n: int = 1) -> None:
        with self._progress:
            self._counts[name] += n

    def _committed(self, messages: list[Message], marked: list[int]) -> None:
        """The writer committed ``messages`` and delivery marks for ``marked`` (writer thread)."""
        if messages:
            self._drainer.committed(messages)
        with self._progress:  # counted before flush() can see the rows gone
            self._counts["events_put"] += len(messages)
            self._counts["acked"] += len(marked)
            self._progress.notify_all()

    def _send_unstored(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        """An event the outbox could not store, straight to the broker if connected (writer thread)."""
        return self._connected and not self._closing and self._client.publish(topic, payload, qos, retain).rc == 0

    def _progressed(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # -- paho callbacks (network thread: queue work, never block) -----------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._count("connect_failures")
            self._count("auth_failures")
            n = self._counts["auth_failures"]
            level = logging.ERROR if n == 1 or n % 30 == 0 else logging.DEBUG
            log.log(level, "mqtt broker refused the connection host=%s user=%s reason=%s refusals=%d; retrying with "
                    "back-off (check the username and password_file / password_env options)", self.config.host,
                    self.config.username, reason_code, n)
            return
        self._drainer.take_over_resends()  # before paho re-sends its in-flight messages (see drainer)
        self._count("connects")
        self._tls_problem = None
        no_delay(client)
        self._status.connected()
        if self._dispatcher is not None:
            client.subscribe(self.topics.command, qos=1)
        for topic, qos in list(self._subscriptions.items()):
            client.subscribe(topic, qos=qos)
        log.info("mqtt connected host=%s port=%d session_present=%s", self.config.host, self.config.port,
                 getattr(flags, "session_present", None))
        with self._progress:
            self._connected = True
            self._progress.notify_all()
        self._drainer.connected()

    def _on_connect_fail(self, client, userdata) -> None:
        self._count("connect_failures")
        failures = self._counts["connect_failures"]
        loud = failures == 1 or failures % 30 == 0
        if self._tls_problem is not None:
            self._count("tls_failures")
        if self.config.tls and loud:  # say why, off paho's network thread (a handshake takes a moment)
            threading.Thread(target=self._diagnose_tls, args=(failures,), name="factoryedge-mqtt-tls-check",
                             daemon=True).start()
            return
        log.log(logging.WARNING if loud else logging.DEBUG, "mqtt cannot reach the broker host=%s port=%d "
                "failures=%d; retrying (outbox keeps events)", self.config.host, self.config.port, failures)

    def _diagnose_tls(self, failures: int) -> None:
        problem = diagnose_tls(self.config)
        if problem is None:
            log.warning("mqtt cannot reach the broker host=%s port=%d failures=%d; retrying (outbox keeps events)",
                        self.config.host, self.config.port, failures)
            return
        if self._tls_problem is None:
            self._count("tls_failures")  # the attempt that led here
        self._tls_problem = problem
        log.error("mqtt TLS connection to host=%s port=%d failed: %s; failures=%d, retrying (outbox keeps events)",
                  self.config.host, self.config.port, problem, failures)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._status.disconnected()
        with self._progress:
            self._connected = False
            self._progress.notify_all()
        self._drainer.disconnected()
        if not self._closing:
            log.warning("mqtt disconnected host=%s reason=%s; reconnecting", self.config.host, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._drainer.acked(mid, reason_code.is_failure, str(reason_code))

    def _on_message(self, client, userdata, message) -> None:
        if self._dispatcher is not None:
            self._dispatcher.submit(message)

    # -- commands ---------------------------------------------------------------------------

    def subscribe_commands(self, callback: CommandCallback, opener: Callable[[bytes], msg.Command] | None = None) -> None:
        """Call ``callback(command)`` for each command on this machine's command topic.

        It runs on a worker thread, one command at a time; it returns None or a dict
        (status "ok", the dict as result) or a ``messages.CommandReply`` (e.g. "accepted"
        for work that continues in the background); an exception answers "error". See
        ``commands`` for duplicates and MQTT 5 response topics. ``opener`` turns a payload into a
        command (default ``messages.parse_command``; ``command_auth.CommandAuthority.open`` where
        the profile requires signed commands). Call once per sink.
        """
        if self._dispatcher is not None:
            raise SinkError("subscribe_commands was already called on this sink; give one callback that dispatches")
        self._dispatcher = CommandDispatcher(self.identity, self.topics, callback, self._respond, opener)
        if self._connected:
            self._client.subscribe(self.topics.command, qos=1)

    def subscribe(self, topic: str, callback: Callable[[bytes], None], qos: int = 1) -> None:
        """Call ``callback(payload)`` for each message on ``topic`` (triggers use ``open_trigger_session``).

        It runs on paho's network thread, so it must only hand the payload on (a queue), never
        block. The sink's session is clean, so the subscription is renewed on every connect.
        """
        if self._closed:
            raise SinkError(f"the MQTT sink to {self.config.host!r} is closed; open a new one to subscribe")
        self._client.message_callback_add(topic, lambda client, userdata, message: callback(message.payload))
        self._subscriptions[topic] = qos
        if self._connected:
            self._client.subscribe(topic, qos=qos)  # twice if a connect races this: harmless

    def open_trigger_session(self, topic: str, callback: Callable[[bytes], None]) -> TriggerSession:
        """Receive ``topic`` in a persistent session of its own (``trigger_session``); the caller closes it.

        A station's decisions ride on this sink, so its reconnect back-off is capped as the session's.
        """
        cap = STATION_RECONNECT_MAX_S
        self._client.reconnect_delay_set(min(self.config.reconnect_min, cap), min(self.config.reconnect_max, cap))
        return TriggerSession(self.config, topic, callback)

    def _respond(self, topic: str, body: bytes, correlation: bytes | None) -> None:
        properties = None
        if correlation is not None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation
        self._client.publish(_check_topic(topic), body, qos=1, properties=properties)

    # -- shutdown ---------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> bool:
        """Flush the outbox (up to ``timeout``), publish "offline", disconnect; True if all went out.

        Anything still pending stays in the outbox file and is sent by the next process.
        """
        if self._closed:
            return True
        self._closing = True
        deadline = time.monotonic() + timeout
        reserve = min(2.0, timeout / 4)  # time kept back for the offline status
        flushed = self.flush(max(0.0, timeout - reserve))
        self._status.stop()
        if self._connected:
            info = self._status.publish_offline()
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (ValueError, RuntimeError) as e:
                log.warning("mqtt could not publish the offline status: %s", e)
        # paho's loop thread may run once more on the closed socket and log "Client is not
        # connected" as an error; on a deliberate shutdown that is noise, not a fault.
        self._client.disable_logger()
        self._client.disconnect()
        self._client.loop_stop()
        self._drainer.stop(timeout=5.0)
        self._writer.close()  # commits what is still queued: handed-over events and the last marks
        if self._dispatcher is not None:
            self._dispatcher.stop()
        depth = self._final_depth = self.outbox.depth()
        if depth:
            log.warning("mqtt sink closed with %d undelivered messages; they stay in %s for the next start",
                        depth, self.outbox.path)
        if self._owns_outbox:
            self.outbox.close()
        self._closed = True
        log.info("mqtt sink closed flushed=%s", flushed and depth == 0)
        return flushed and depth == 0

    def __enter__(self) -> MqttSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not topic or any(c in topic for c in "+#\0") or len(topic.encode()) > 65535:
        raise ConfigError(f"{topic!r} is not a topic one can publish to; use a non-empty name without '+', '#'")
    return topic


def _encode(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    if isinstance(payload, dict):
        try:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot publish {payload!r} as JSON: {e}") from None
    if isinstance(payload, msg.Payload):
        return payload.to_bytes()
    raise ConfigError(f"cannot publish a {type(payload).__name__}; give bytes, str, a dict or a payload model")
