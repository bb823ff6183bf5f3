"""The retained ``status`` topic: ``online`` that expires unless refreshed, the Will, ``offline`` on shutdown.

Why ``online`` expires: the Last Will is sent by the broker, so a device that dies while the
broker is down (a plant-wide power cut where the broker comes back first, with its retained
messages restored from persistence) leaves an ``online`` that no Will ever corrects. So
``online`` goes out with an MQTT 5 message expiry of ``status_expiry_s`` and is re-published
every third of it while connected: a live device keeps it fresh, a dead one lets the broker
drop it, and the payload's ``expiry_s`` / ``refresh_s`` / ``time_epoch`` let any consumer
(MQTT 3.1.1 ones included) judge its age the same way (``firmware-config/mqtt.md``).

The Will and the shutdown ``offline`` carry no expiry: "this device is gone" stays true until
the device itself says otherwise.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from factoryedge.runtimes import messages as msg

from .mqtt_config import MqttConfig

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")


class StatusKeeper:
    """Publishes one device's retained status; a thread refreshes ``online`` while connected.

    ``client`` (the sink's paho client) is set once made: the client needs ``will()`` first.
    """

    def __init__(self, config: MqttConfig, identity: msg.Identity, topic: str) -> None:
        self.client: Any = None
        self.config = config
        self.identity = identity
        self.topic = topic
        self.expiry_s = config.status_expiry_s or None
        self.refresh_s = self.expiry_s / 3.0 if self.expiry_s else None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refreshes = 0

    def will(self) -> bytes:
        """The Last Will's payload: ``offline`` / ``connection_lost``, without expiry."""
        return msg.status_payload(self.identity, "offline", "connection_lost", self.config.client_id).to_bytes()

    def start(self) -> StatusKeeper:
        """Start refreshing (a no-op when ``status_expiry_s`` is 0: ``online`` then never expires)."""
        if self.refresh_s is not None and self._thread is None:
            self._thread = threading.Thread(target=self._refresh_loop, name="factoryedge-mqtt-status", daemon=True)
            self._thread.start()
        return self

    def connected(self) -> None:
        """Publish ``online`` now (paho's network thread, right after CONNACK) and refresh it from here on."""
        if self._stop.is_set():
            return  # closing: "offline" is about to go out (or went out) and must stay the last word
        self._publish_online()
        self._connected.set()

    def disconnected(self) -> None:
        self._connected.clear()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            if self._connected.is_set():
                self._publish_online()
                self.refreshes += 1

    def _publish_online(self) -> None:
        payload = msg.status_payload(self.identity, "online", "connected", self.config.client_id,
                                     expiry_s=self.expiry_s, refresh_s=self.refresh_s).to_bytes()
        info = self.client.publish(self.topic, payload, qos=1, retain=True, properties=self._expiry_properties())
        if info.rc != 0:
            log.debug("mqtt status refresh not sent (rc=%s); the next connect publishes it", info.rc)

    def _expiry_properties(self) -> Any:
        if self.expiry_s is None or self.config.protocol != "5":
            return None  # MQTT 3.1.1 has no message expiry: consumers judge the payload's age alone
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = int(self.expiry_s)
        return properties

    def stop(self) -> None:
        """Stop refreshing; before ``offline`` goes out, or a late refresh could overwrite it with ``online``."""
        self._stop.set()
        self._connected.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def publish_offline(self) -> Any:
        """Publish the retained ``offline`` / ``shutdown`` (after ``stop``); returns paho's message info."""
        offline = msg.status_payload(self.identity, "offline", "shutdown", self.config.client_id).to_bytes()
        return self.client.publish(self.topic, offline, qos=1, retain=True)
