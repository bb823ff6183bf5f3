"""Where part triggers come from: the PLC over MQTT, a serial/GPIO adapter, or a fixed period.

Every source yields ``Trigger`` objects from ``iter(source)`` until ``close()`` (callable
from any thread). A trigger's ``t_wall`` / ``t_mono`` are taken the moment this host
received it, so the deadline runs from there; a PLC's own time (``"t"`` in a JSON trigger)
is kept in ``t_plc``, used only to tell a trigger that reached this host after its deadline
(held by the broker while the station reconnected): the sorter answers it at once.

URIs: ``mqtt`` (``<machine topic>/trigger`` on the runtime's MQTT broker),
``serial:///dev/ttyUSB1?baud=115200`` (one part id per line, read through the same
``serial_port.SerialPort`` as the vibration source), ``periodic://?period_ms=200``
(free-running, ids ``<prefix><n>``; ``count=N`` stops after N).

A malformed trigger is never silently dropped: it is logged, counted in ``stats`` and
handed to ``on_error(reason, raw)``, which the sorter answers on ``<machine>/trigger/error``.

The MQTT trigger listens on a client of its own beside the sink's (``sinks.trigger_session``):
a persistent session, so the broker holds triggers while the station reconnects, where the
sink's clean session (right for commands) let it drop them. A trigger held past its deadline
is answered at once by the sorter with the fail-safe verdict. paho is only touched through
the sink; this module imports no hardware library.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.contracts import UriPlugin
from factoryedge.runtimes.messages.inspection import MAX_PART_ID, check_part_id, parse_trigger
from factoryedge.runtimes.options import as_float, as_int, parse_options, split_uri
from factoryedge.runtimes.serial_port import PortLost, PortOpenError, SerialPort

log = logging.getLogger(__name__)

ErrorCallback = Callable[[str, bytes], None]
_SERIAL_OPTIONS = {"baud": as_int(50, 20_000_000, 115200), "timeout": as_float(0.0, 0.05),
                   "reconnect_min": as_float(0.0, 0.1), "reconnect_max": as_float(0.0, 1.0),
                   "reconnect_s": as_float(0.0, 1.0)}
_PERIODIC_OPTIONS = {"period_ms": as_float(0.0, 200.0), "prefix": lambda k, v: check_part_id(str(v) + "0")[:-1],
                     "count": as_int(1, 10**12, 100), "start": as_int(0, 10**12, 0)}


@dataclass(frozen=True, slots=True)
class Trigger:
    """A part to judge: its id, when this host heard of it, and from which source."""

    part_id: str
    t_wall: float
    t_mono: float
    source: str
    t_plc: float | None = None


class TriggerSource(UriPlugin):
    """Base: a queue filled by a producer (thread or network callback), drained by ``iter()``."""

    name = "trigger"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Trigger | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self.on_error: ErrorCallback = lambda reason, raw: None
        self.counts = {"triggers": 0, "malformed": 0}

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.counts)

    def start(self) -> TriggerSource:
        """Begin producing triggers (idempotent); the sorter calls it once it can answer them."""
        return self

    def _emit(self, part_id: str, source: str, t_plc: float | None = None,
              t_wall: float | None = None, t_mono: float | None = None) -> None:
        self.counts["triggers"] += 1
        self._queue.put(Trigger(part_id, time.time() if t_wall is None else t_wall,
                                time.monotonic() if t_mono is None else t_mono, source, t_plc))

    def _malformed(self, reason: str, raw: bytes) -> None:
        self.counts["malformed"] += 1
        log.warning("%s: malformed trigger %r: %s", self.name, raw[:80], reason)
        try:
            self.on_error(reason, raw)
        except Exception:  # noqa: BLE001 - reporting must never end the trigger stream
            log.exception("%s: reporting a malformed trigger failed", self.name)

    def __iter__(self) -> Iterator[Trigger]:
        self.start()
        while not self._closing.is_set():
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            yield item

    def close(self) -> None:
        """End the iteration (any thread, idempotent)."""
        self._closing.set()
        self._queue.put(None)

    def __enter__(self) -> TriggerSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MqttTrigger(TriggerSource):
    """Triggers on ``<machine topic>/trigger`` (QoS 1), received on an ``MqttSink``'s client.

    The paho network thread only stamps and queues the raw payload; parsing and error
    reports happen on the consumer's thread (an error report commits to the outbox on disk).
    """

    name = "mqtt trigger"
    SUBSCRIBE_WAIT_S = 5.0

    @classmethod
    def from_uri(cls, uri: str, sink: Any = None) -> MqttTrigger:
        """``mqtt``: the runtime's own connection; ``sink`` is that connection's MqttSink."""
        cls.validate(uri)
        if sink is None:
            raise ConfigError("trigger 'mqtt' listens on the runtime's MQTT connection, but none was given")
        return cls(sink)

    @classmethod
    def validate(cls, uri: str, **options: Any) -> None:
        if str(uri).strip().lower() != "mqtt" or options:
            raise ConfigError(f"trigger {uri!r}: write just 'mqtt'; it uses the runtime's MQTT connection and "
                              "topic <machine>/trigger")

    def __init__(self, sink: Any, topic: str | None = None) -> None:
        super().__init__()
        self.sink = sink
        self.topic = topic or f"{sink.topics.base}/trigger"
        self._raw: queue.SimpleQueue[tuple[bytes, float, float] | None] = queue.SimpleQueue()
        self._started = False
        self._session: Any = None  # sinks.trigger_session.TriggerSession, once started on an MqttSink

    def start(self) -> MqttTrigger:
        """Subscribe; waits up to ``SUBSCRIBE_WAIT_S`` for the broker's acknowledgement, then goes on regardless.

        Waiting lets a PLC started right after the station find the subscription in place; a
        broker that is down at start must not keep the station from starting.
        """
        if not self._started:
            self._started = True
            if hasattr(self.sink, "open_trigger_session"):
                self._session = self.sink.open_trigger_session(self.topic, self._on_message)
                if not self._session.wait_subscribed(self.SUBSCRIBE_WAIT_S):
                    log.warning("mqtt trigger: no subscription acknowledged within %g s; carrying on, it is made on "
                                "connect", self.SUBSCRIBE_WAIT_S)
            elif hasattr(self.sink, "subscribe"):  # a sink without sessions of its own (tests, other sinks)
                self.sink.subscribe(self.topic, self._on_message, qos=1)
            else:
                raise ConfigError(f"the mqtt trigger needs the runtime's MqttSink; {type(self.sink).__name__} cannot subscribe")
            log.info("mqtt trigger listening on %s", self.topic)
        return self

    @property
    def stats(self) -> dict[str, int]:
        """The counts, plus ``sessions_lost`` once on a trigger session.

        ``sessions_lost``: reconnects that found no session left on the broker (away longer than
        ``trigger_session_s``, or a broker without persistence restarted): triggers sent meanwhile
        may have gone unanswered. Also logged as an error each time.
        """
        if self._session is None:
            return dict(self.counts)
        return {**self.counts, "sessions_lost": self._session.sessions_lost}

    def _on_message(self, payload: bytes) -> None:
        self._raw.put((bytes(payload), time.time(), time.monotonic()))

    def __iter__(self) -> Iterator[Trigger]:
        self.start()
        while not self._closing.is_set():
            try:
                item = self._raw.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                break
            data, t_wall, t_mono = item
            try:
                part_id, t_plc = parse_trigger(data)
            except ConfigError as e:
                self._malformed(str(e), data)
                continue
            self.counts["triggers"] += 1
            yield Trigger(part_id, t_wall, t_mono, "mqtt", t_plc)

    def close(self) -> None:
        self._closing.set()
        self._raw.put(None)
        if self._session is not None:
            self._session.close()


class SerialTrigger(TriggerSource):
    """One part id per line (``\\n``, optional ``\\r``) from a PLC or GPIO adapter on a serial port.

    A line that is not printable ASCII or longer than 128 characters is malformed (counted
    as ``malformed`` and reported). A lost port (read failure, device node gone or
    replaced) is reopened with backoff from ``reconnect_min`` doubling to ``reconnect_max``
    (default 0.1 to 1 s: parts keep passing while the trigger is deaf); ``stats`` counts
    ``disconnects`` and ``reconnects``. ``reconnect_s``, the fixed retry period of earlier
    releases, is still accepted and means ``reconnect_min = reconnect_max = reconnect_s``.
    The port is opened exclusively, so a second reader fails with "in use".
    """

    name = "serial trigger"
    OPTIONS = _SERIAL_OPTIONS

    @classmethod
    def from_uri(cls, uri: str, sink: Any = None, **options: Any) -> SerialTrigger:
        """``serial:///dev/ttyUSB1?baud=115200``; keyword options override the URI's."""
        port, given = split_uri(str(uri).strip(), "serial")
        if not port:
            raise ConfigError(f"trigger {uri!r} names no port; e.g. serial:///dev/ttyUSB1?baud=115200")
        return cls(port, **parse_options(f"trigger {uri!r}", {**given, **options}, cls.OPTIONS))

    def __init__(self, port: str, baud: int = 115200, timeout: float = 0.05, reconnect_min: float | None = None,
                 reconnect_max: float | None = None, reconnect_s: float | None = None) -> None:
        super().__init__()
        if not port.startswith("/"):
            raise ConfigError(f"serial trigger port {port!r} must be an absolute device path, e.g. "
                              "serial:///dev/ttyUSB1 (three slashes)")
        if reconnect_s is not None:
            if reconnect_min is not None or reconnect_max is not None:
                raise ConfigError(f"serial trigger {port!r}: give reconnect_s (a fixed retry period) or "
                                  "reconnect_min/reconnect_max (a backoff), not both")
            reconnect_min = reconnect_max = reconnect_s
        self.port, self.baud, self.timeout = port, baud, timeout
        self._port = SerialPort(
            port, baud=baud, timeout=timeout,
            reconnect_min=0.1 if reconnect_min is None else reconnect_min,
            reconnect_max=1.0 if reconnect_max is None else reconnect_max,
            label="serial trigger port", purpose="reading serial part triggers", logger=log,
        )
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> dict[str, int]:
        return {**self.counts, "disconnects": self._port.disconnects, "reconnects": self._port.reconnects}

    def start(self) -> SerialTrigger:
        if self._thread is None and not self._closing.is_set():
            try:
                self._port.open()
            except PortOpenError as e:
                raise SourceError(f"cannot open serial trigger port {self.port!r} at {self.baud} baud: {e.reason}") from None
            log.info("serial trigger %s open at %d baud", self.port, self.baud)
            self._thread = threading.Thread(target=self._read_loop, name="factoryedge-serial-trigger", daemon=True)
            self._thread.start()
        return self

    def _read_loop(self) -> None:
        buf = b""
        while not self._closing.is_set() and not self._port.closed:
            try:
                data = self._port.read()
            except PortLost as e:
                buf = b""  # half a part id from before the loss must not prefix the next one
                if not self._port.reconnect(e.reason):
                    break
                continue
            if not data:
                continue
            t_wall, t_mono = time.time(), time.monotonic()
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._line(line.rstrip(b"\r"), t_wall, t_mono)
            if len(buf) > 4 * MAX_PART_ID:
                self._malformed(f"no line end within {len(buf)} bytes", buf)
                buf = b""
        self._port.close()

    def _line(self, line: bytes, t_wall: float, t_mono: float) -> None:
        if not line.strip():
            return  # blank keep-alive lines some adapters send
        try:
            text = line.decode("ascii").strip()
            part_id = check_part_id(text)
        except (UnicodeDecodeError, ConfigError) as e:
            self._malformed(str(e) if isinstance(e, ConfigError) else "bytes that are not ASCII", line)
            return
        self._emit(part_id, "serial", t_wall=t_wall, t_mono=t_mono)

    def close(self) -> None:
        super().close()
        self._port.close()  # also ends a reconnect backoff wait at once
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)


class PeriodicTrigger(TriggerSource):
    """Free-running triggers every ``period_ms`` on a drift-free schedule; ids ``<prefix><n:06d>``.

    A consumer that falls behind does not get a burst of catch-up triggers: missed ticks
    are skipped and counted as ``missed_ticks``.
    """

    name = "periodic trigger"
    OPTIONS = _PERIODIC_OPTIONS

    @classmethod
    def from_uri(cls, uri: str, sink: Any = None, **options: Any) -> PeriodicTrigger:
        """``periodic://?period_ms=200&count=N&prefix=p``; keyword options override the URI's."""
        where, given = split_uri(str(uri).strip(), "periodic")
        if where:
            raise ConfigError(f"trigger {uri!r}: periodic takes only options, e.g. periodic://?period_ms=200")
        return cls(**parse_options(f"trigger {uri!r}", {**given, **options}, cls.OPTIONS))

    def __init__(self, period_ms: float = 200.0, prefix: str = "p", count: int | None = None, start: int = 0) -> None:
        super().__init__()
        self.period_s = period_ms / 1000.0
        self.prefix, self.count, self.first = prefix, count, start
        self.counts["missed_ticks"] = 0
        self._thread: threading.Thread | None = None

    def start(self) -> PeriodicTrigger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._tick_loop, name="factoryedge-periodic-trigger", daemon=True)
            self._thread.start()
        return self

    def _tick_loop(self) -> None:
        t0, k, n = time.monotonic(), 0, self.first
        while self.count is None or n < self.first + self.count:
            due = t0 + k * self.period_s
            if self._closing.wait(max(0.0, due - time.monotonic())):
                return
            self._emit(f"{self.prefix}{n:06d}", "periodic")
            n += 1
            behind = int((time.monotonic() - due) / self.period_s)
            self.counts["missed_ticks"] += behind
            k += 1 + behind
        self._queue.put(None)  # count reached: end the iteration
