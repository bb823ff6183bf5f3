"""A station's trigger subscription in a persistent MQTT session of its own, so no trigger is lost to a reconnect.

The sink's session is clean on purpose (a command queued for an offline device must not
apply itself hours later), and a clean session is exactly what lost triggers: while a station
reconnected, the broker PUBACKed the PLC's triggers and dropped them, with nothing logged
anywhere. So triggers ride on a second client, ``<client_id>-trigger``, which connects with
``clean_start`` false and a session expiry of ``trigger_session_s``: for that long after the
station's connection drops (a broker restart included, when the broker has persistence on),
the broker queues the triggers and delivers them when the station is back. The sorter answers
one that arrives past its deadline at once with the fail-safe verdict (``inspection.sorter``),
so the PLC gets an answer for every trigger the broker accepted.

The expiry bounds how long the broker holds triggers for a station that is gone for good;
it must cover a broker restart plus the station's reconnect, whose back-off is capped at
``STATION_RECONNECT_MAX_S`` here (a station left on the sink's 30 s back-off was measured
answering nothing for ~15 s after a 1 s broker outage). This client has no Will and publishes
nothing: the sink's ``status`` speaks for the device. It is a second paho network thread in the
process (DESIGN.md's trap); it only receives a few messages per part, never a burst it must
publish, and its callback only queues the payload.

MQTT 3.1.1 has no session expiry: the session is then clean, as before (logged at start).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from .mqtt_config import MqttConfig
from .paho_client import import_paho, make_client, no_delay

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")

STATION_RECONNECT_MAX_S = 1.0  # parts keep coming while a station is away; retry at least every second


class TriggerSession:
    """Receives ``topic`` at QoS 1 in a persistent session; ``callback(payload)`` runs on paho's thread.

    ``callback`` must only hand the payload on (a queue). ``close`` keeps the session on the
    broker until it expires, so triggers sent while the program restarts are held for it too.
    """

    def __init__(self, config: MqttConfig, topic: str, callback: Callable[[bytes], None]) -> None:
        mqtt = import_paho()
        self.topic = topic
        self.expiry_s = config.trigger_session_s
        self.persistent = config.protocol == "5"
        self.config = dataclasses.replace(config, client_id=f"{config.client_id[:120]}-trigger",
                                          reconnect_min=min(config.reconnect_min, STATION_RECONNECT_MAX_S),
                                          reconnect_max=min(config.reconnect_max, STATION_RECONNECT_MAX_S))
        self._callback = callback
        self._subscribed = threading.Event()
        self._closing = False
        self.connects = 0
        self.sessions_lost = 0  # reconnects where the broker had no session left: triggers may be lost
        self._client = make_client(mqtt, self.config, topic, b"")
        self._client.will_clear()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = lambda client, userdata, message: self._callback(message.payload)
        if self.persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.expiry_s
            # paho keeps clean_start and these properties for every reconnect
            self._client.connect_async(config.host, config.port, config.keepalive, clean_start=False,
                                       properties=properties)
        else:
            log.warning("mqtt trigger session: MQTT 3.1.1 has no session expiry, so the trigger subscription is "
                        "a clean session and triggers sent while the station reconnects are lost; use protocol=5")
            self._client.connect_async(config.host, config.port, config.keepalive)
        self._client.loop_start()
        log.info("mqtt trigger session opened client_id=%s topic=%s session_expiry_s=%s reconnect_max_s=%g",
                 self.config.client_id, topic, self.expiry_s if self.persistent else None, self.config.reconnect_max)

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait for the broker to acknowledge the first subscription (start-up, tests)."""
        return self._subscribed.wait(timeout)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt trigger session refused host=%s client_id=%s reason=%s; retrying", self.config.host,
                      self.config.client_id, reason_code)
            return
        no_delay(client)
        self.connects += 1
        present = bool(getattr(flags, "session_present", False))
        if self.connects > 1 and self.persistent and not present:
            self.sessions_lost += 1
            log.error("mqtt trigger session was gone when the station reconnected (away longer than %d s, or a "
                      "broker without persistence restarted): triggers sent meanwhile got no decision", self.expiry_s)
        client.subscribe(self.topic, qos=1)  # also with a session present: harmless, and repairs a lost one
        log.info("mqtt trigger session connected session_present=%s", present)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("mqtt broker refused the trigger subscription to %s: %s (check the device's ACL)", self.topic,
                      [str(rc) for rc in reason_codes])
            return
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._closing:
            log.warning("mqtt trigger session disconnected reason=%s; reconnecting within %g s (the broker holds "
                        "triggers for %d s)", reason_code, self.config.reconnect_max, self.expiry_s)

    def close(self) -> None:
        """Disconnect, leaving the session to expire on the broker (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._client.disable_logger()
        self._client.disconnect()
        self._client.loop_stop()
