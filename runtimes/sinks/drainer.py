"""The MQTT sink's drainer: sends committed outbox rows, at most ``max_inflight`` unacknowledged.

One thread owns the mid -> row map. It learns of work through a queue: rows the writer just
committed (handed over in memory, so a steady stream costs no SELECT per message), PUBACKs
(passed to the writer as delivery marks: the drainer never waits on the disk), and
(dis)connects. After a (re)connect, and whenever it may have missed rows (a long outage, a
full window for a long burst), it reads the backlog from the outbox, oldest first, and uses
the in-memory rows again once the table holds nothing newer than what it has sent. Rows are
sent in id order on each connection either way, so delivery order per topic is the order
events were accepted.

One re-send path: the outbox. paho also keeps every unacknowledged QoS 1/2 message and sends
it again itself right after a reconnect (``on_connect`` returns, then paho re-publishes its
in-flight messages with the DUP flag). With the drainer re-reading the same rows from the
outbox, an event whose PUBACK was lost went out three times: the original, paho's copy and
the drainer's. ``take_over_resends`` (called first in ``on_connect``) drops paho's copies of
outbox rows through paho's public ``drop_out_messages`` (paho-mqtt 2.2+), so a lost PUBACK
costs at most one duplicate per event per connection loss. That is also what the protocol
expects: the sink's session is clean (``paho_client.make_client``), so the broker keeps
nothing of the old connection and nothing obliges the client to re-send.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .outbox import Message, Outbox

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")

_MAX_FRESH = 10_000  # committed rows kept in memory while the window is full; beyond, read them back


class Drainer:
    """Call ``start()``; feed it with ``committed``, ``acked``, ``connected``, ``disconnected``; ``stop()``."""

    def __init__(self, client: Any, outbox: Outbox, max_inflight: int, mark: Callable[[list[int]], None],
                 count: Callable[[str, int], None], progressed: Callable[[], None]):
        self._client, self.outbox, self.max_inflight = client, outbox, max_inflight
        self._mark, self._count, self._progressed = mark, count, progressed
        self._events: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._thread: Any = None
        # A publish and paho's reconnect must not interleave: a row published on a new connection
        # before take_over_resends drops paho's queue would be dropped unsent, or, published just
        # after, sent twice on it. The lock orders the drop against publishes; the generation,
        # bumped by every (dis)connect, stops the drainer from publishing until it has seen the
        # "connected" of the connection paho now has.
        self._send_lock = threading.Lock()
        self._generation = 0
        self._mine: set[int] = set()  # mids of outbox rows paho holds unacknowledged (under _send_lock)
        self._drop = getattr(client, "drop_out_messages", None)
        if self._drop is None:
            log.warning("this paho-mqtt has no drop_out_messages (2.2 or newer has): after a lost PUBACK "
                        "an event may arrive three times instead of twice; upgrade paho-mqtt")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="factoryedge-mqtt-drain", daemon=True)
        self._thread.start()

    # -- from other threads (never block) -------------------------------------------------

    def committed(self, messages: list[Message]) -> None:
        self._events.put(("rows", messages))

    def acked(self, mid: int, failed: bool, reason: str) -> None:
        self._events.put(("ack", mid, failed, reason))

    def take_over_resends(self) -> None:
        """Drop paho's own re-sends of outbox rows; call first thing in ``on_connect`` (paho's thread).

        paho re-sends what it holds right after ``on_connect`` returns; the drainer re-sends the
        same rows from the outbox once it sees ``connected``. Other messages paho held (a command
        response, a status) are not in the outbox, so they are published again here instead.
        """
        with self._send_lock:
            self._generation += 1
            if self._drop is None:
                return
            held = self._drop()
            mine, self._mine = self._mine, set()
        others = [m for m in held if m.mid not in mine]
        if len(held) > len(others):
            log.info("mqtt reconnected with %d unacknowledged outbox messages; they are re-sent from the outbox",
                     len(held) - len(others))
        for m in others:
            self._client.publish(m.topic, m.payload, qos=m.qos, retain=m.retain, properties=m.properties)

    def connected(self) -> None:
        self._events.put(("connected", self._generation))

    def disconnected(self) -> None:
        # no lock here: paho may call on_disconnect while it holds its message lock, which a
        # publish under _send_lock waits for; only paho's thread writes the generation
        self._generation += 1
        self._events.put(("disconnected",))

    def stop(self, timeout: float = 5.0) -> None:
        self._events.put(("stop",))
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------------------

    def _loop(self) -> None:
        self._inflight: dict[int, int] = {}
        self._fresh: deque[Message] = deque()
        self._sent_upto = 0  # rows up to this id were sent on the current connection
        self._backlog = True  # the table may hold unsent rows that are not in _fresh
        self._connected = False
        self._connection = -1  # the generation of the connection the drainer sends on
        while True:
            try:
                batch = [self._events.get(timeout=1.0)]
            except queue.Empty:
                batch = [("tick",)]  # a safety net: a lost wake-up costs at most a second
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            try:
                if self._handle(batch):
                    return
                if self._connected and len(self._inflight) < self.max_inflight:
                    self._send_more()
            except Exception:  # noqa: BLE001 - the drainer must outlive any one failure
                log.exception("mqtt outbox drainer failed; retrying in 1 s")
                self._backlog = True
                time.sleep(1.0)
            self._progressed()

    def _handle(self, batch: list[tuple]) -> bool:
        acked, mids, stop = [], [], False
        for event in batch:
            kind = event[0]
            if kind == "rows":
                if self._backlog or not self._connected:
                    continue  # they are in the table: the backlog read finds them
                self._fresh.extend(event[1])
                if len(self._fresh) > _MAX_FRESH:
                    self._fresh.clear()
                    self._backlog = True
            elif kind == "ack":
                mids.append(event[1])
                row = self._inflight.pop(event[1], None)
                if row is not None and event[2]:
                    log.error("broker refused an outbox message row=%d reason=%s; it stays in the "
                              "outbox and is retried on the next connection", row, event[3])
                    self._count("rejected", 1)
                elif row is not None:
                    acked.append(row)
            elif kind in ("connected", "disconnected"):
                # un-acked rows of the old connection go out again on the new one
                self._connected, self._sent_upto, self._backlog = kind == "connected", 0, True
                if kind == "connected":
                    self._connection = event[1]
                self._inflight.clear()
                self._fresh.clear()
            elif kind == "stop":
                stop = True
        if mids:
            with self._send_lock:
                self._mine.difference_update(mids)
        if acked:
            self._mark(acked)
        return stop

    def _send_more(self) -> None:
        room = self.max_inflight - len(self._inflight)
        if self._backlog:
            self._fresh.clear()  # committed before this read, so the read returns them
            rows = self.outbox.pending(room, after=self._sent_upto)
            if len(rows) < room:
                self._backlog = False  # the table holds nothing newer: rows come in memory from now on
        else:
            rows = []
            while self._fresh and len(rows) < room:
                row = self._fresh.popleft()
                if row.id > self._sent_upto:  # else sent already, by the backlog read
                    rows.append(row)
        sent = 0
        with self._send_lock:
            for row in rows:
                if self._generation != self._connection:
                    # paho (dis)connected since the drainer's last "connected"; that event is queued
                    # and resets everything, so these rows are read again from the table after it
                    self._backlog = True
                    break
                try:
                    info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                except ValueError as e:  # a row no publish can send (e.g. written by other software)
                    log.error("mqtt cannot send outbox row=%d topic=%r: %s; it stays in %s for inspection",
                              row.id, row.topic, e, self.outbox.path)
                    self._sent_upto = row.id
                    continue
                if info.rc not in (0, 4):  # 4 = not connected: paho holds it until take_over_resends drops it
                    log.warning("mqtt publish failed row=%d rc=%s; retried on the next connection", row.id, info.rc)
                    self._backlog = True
                    break
                self._mine.add(info.mid)
                self._inflight[info.mid] = row.id
                self._sent_upto = row.id
                sent += 1
        if sent:
            self._count("published", sent)
        # no self-wake needed: a full page fills the window, and each PUBACK wakes the drainer
