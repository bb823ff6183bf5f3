"""Events the outbox could not store (a full disk): counted, logged by id, sent directly while connected.

An event that cannot be stored is not given up. While the sink is connected it goes to the
broker at once, at its QoS, but only from memory: it is delivered at most once (a lost
connection or a crash before the PUBACK loses it). While disconnected it is lost, and the
log says so. Each one's id (``event_id``, or ``part_id`` for a decision) is logged at
WARNING, up to ``_IDS_PER_MINUTE`` a minute; beyond that at DEBUG, with one WARNING summary
for the minute, so an anomaly storm on a full disk does not flood a log that may sit on the
same disk.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")

_IDS_PER_MINUTE = 20
_WINDOW_S = 60.0


class Unstored:
    """``handle`` is the outbox writer's ``on_unstored``; ``send(topic, payload, qos, retain)`` -> sent."""

    def __init__(self, send: Callable[[str, bytes, int, bool], bool]):
        self._send = send
        self._lock = threading.Lock()
        self.count = 0  # events the outbox could not store
        self.sent = 0  # of those, handed to the connected broker (at most once)
        self._window_start = -_WINDOW_S
        self._logged = 0  # ids logged at WARNING in this window
        self._quiet = [0, 0]  # not stored, of which sent: logged at DEBUG only in this window

    def handle(self, topic: str, payload: bytes, qos: int, retain: bool, error: Exception) -> bool:
        """Send one unstored event if connected; count and log it. True if it went to the broker."""
        try:
            sent = bool(self._send(topic, payload, qos, retain))
        except Exception as e:  # noqa: BLE001 - a failed direct send must not take the writer thread down
            log.debug("direct send of an unstored event failed: %s", e)
            sent = False
        ident = event_ident(payload)
        with self._lock:
            self.count += 1
            self.sent += sent
            now = time.monotonic()
            summary = None
            if now - self._window_start >= _WINDOW_S:
                if self._quiet[0]:
                    summary = tuple(self._quiet)
                self._window_start, self._logged, self._quiet = now, 0, [0, 0]
            loud = self._logged < _IDS_PER_MINUTE
            if loud:
                self._logged += 1
            else:
                self._quiet[0] += 1
                self._quiet[1] += sent
            total = self.count
        if summary is not None:
            log.warning("outbox full: %d more events were not stored in the last minute (%d sent directly, %d lost); "
                        "their ids are logged at DEBUG", summary[0], summary[1], summary[0] - summary[1])
        fate = (f"sent directly at QoS {qos}, not stored: delivered at most once" if sent
                else "NOT sent either (not connected to the broker): lost")
        log.log(logging.WARNING if loud else logging.DEBUG, "event not stored in the outbox %s topic=%s: %s; %s "
                "(outbox_full=%d)", ident, topic, error, fate, total)
        return sent


def event_ident(payload: bytes) -> str:
    """``event_id=...`` (or ``part_id=...``) from a JSON payload, for the log; ``event_id=?`` otherwise."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "event_id=?"
    if isinstance(obj, dict):
        for key in ("event_id", "part_id"):
            if isinstance(obj.get(key), str):
                return f"{key}={obj[key]}"
    return "event_id=?"
