"""A vibration sensor on a serial port (USB-UART, CDC-ACM or a Jetson UART), as sample blocks.

Opened from ``serial:///dev/ttyUSB0?baud=921600&format=fe1&channels=3&scale=0.001``.
pyserial is imported only when the port is opened. The source survives unplugging: a
failed read, or the device node vanishing or being replaced while the port is quiet,
closes the port and reopens it with exponential backoff, logging each attempt; the first
block after a reconnect has ``gap=True``. Only one thread iterates ``blocks()``; ``close()``
may be called from any thread and ends the iteration within one read timeout.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from factoryedge.errors import ConfigError, SourceError, missing_dependency
from factoryedge.runtimes.contracts import UriPlugin
from factoryedge.runtimes.options import as_bool, as_choice, as_float, as_int, as_scale, parse_options, split_uri
from factoryedge.runtimes.sources.base import SampleBlock
from factoryedge.runtimes.sources.wire import CsvLineDecoder, Fe1Decoder, Frame

log = logging.getLogger(__name__)

OPTIONS = {
    "rate": as_float(0.0, 25600.0),
    "baud": as_int(50, 20_000_000, 921600),
    "format": as_choice("fe1", "csv"),
    "channels": as_int(1, 1024, 3),
    "scale": as_scale,
    "timeout": as_float(0.0, 0.05),
    "wait": as_bool,
    "reconnect_min": as_float(0.0, 0.1),
    "reconnect_max": as_float(0.0, 5.0),
}
_PORT_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyTHS*", "/dev/serial/by-id/*")
# how often a quiet port checks that its device node still is the one it opened
_NODE_CHECK_S = 0.5


def _import_serial() -> Any:
    try:
        import serial
    except ImportError:
        raise missing_dependency("serial", "device", "reading a serial sensor") from None
    if not hasattr(serial, "Serial"):
        raise missing_dependency("serial", "device", "reading a serial sensor (the installed 'serial' is not pyserial)")
    return serial


def available_ports() -> str:
    """A sentence listing the serial ports present, for error messages."""
    found: dict[str, str] = {}
    try:
        from serial.tools import list_ports

        for info in list_ports.comports():
            found[info.device] = info.description if info.description not in ("", "n/a") else ""
    except (ImportError, OSError):
        pass  # the glob below still finds the usual device nodes
    for pattern in _PORT_PATTERNS:
        for path in sorted(glob.glob(pattern)):
            found.setdefault(path, "")
    if not found:
        return "no serial ports found (looked for " + ", ".join(_PORT_PATTERNS) + ")"
    return "ports present: " + ", ".join(f"{p} ({d})" if d else p for p, d in sorted(found.items()))


class SerialSource(UriPlugin):
    """Sample blocks from a serial sensor speaking fe1 frames or CSV lines.

    ``rate`` is the sensor's sample rate in Hz as configured in its firmware: neither fe1
    frames nor CSV lines carry it, so the URI declares it (``rate=25600``) and the device
    program refuses a bundle trained at another rate. ``scale`` converts raw values to physical units (e.g. g per LSB), one factor or one per
    channel. ``channels`` is checked against what the device sends (a mismatch raises
    ``SourceError``); None learns it from the first frame. ``wait`` keeps retrying a port
    that is absent at open instead of failing. ``timeout`` bounds each read, and so how
    quickly ``close()`` takes effect.
    """

    RATE_BEFORE_OPEN = True
    OPTIONS = OPTIONS

    def __init__(
        self,
        port: str,
        *,
        rate: float | None = None,
        baud: int = 921600,
        format: str = "fe1",
        channels: int | None = None,
        scale: float | tuple[float, ...] = 1.0,
        timeout: float = 0.05,
        wait: bool = False,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
    ) -> None:
        given = dict(baud=baud, format=format, scale=scale, timeout=timeout, wait=wait,
                     reconnect_min=reconnect_min, reconnect_max=reconnect_max)
        if channels is not None:
            given["channels"] = channels
        if rate is not None:
            given["rate"] = rate
        opts = parse_options(f"serial port {port!r}", given, OPTIONS)
        if not port.startswith("/"):
            raise ConfigError(
                f"serial port {port!r} must be an absolute device path; write serial:///dev/ttyUSB0 (three slashes)"
            )
        if opts["reconnect_min"] > opts["reconnect_max"]:
            raise ConfigError(
                f"reconnect_min={opts['reconnect_min']} exceeds reconnect_max={opts['reconnect_max']}; "
                "the backoff doubles from min up to max"
            )
        self.port = port
        self.sample_rate: float | None = opts.get("rate")
        self.baud: int = opts["baud"]
        self.format: str = opts["format"]
        self.channels: int | None = opts.get("channels")
        self.timeout: float = opts["timeout"]
        self.wait: bool = opts["wait"]
        self.reconnect_min: float = opts["reconnect_min"]
        self.reconnect_max: float = opts["reconnect_max"]
        self._scale_given: tuple[float, ...] = opts["scale"]
        self._scale = self._scale_for(self.channels) if self.channels else None
        self._decoder = Fe1Decoder() if self.format == "fe1" else CsvLineDecoder(self.channels, skip_first_line=True)
        self.reconnects = 0
        self.disconnects = 0
        self._serial: Any = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._busy = False  # a read is in progress on another thread's behalf
        self._gap_pending = False
        self._next_node_check = 0.0
        self._node: tuple[int, int, int] | None = None

    @classmethod
    def from_uri(cls, uri: str, **overrides: Any) -> SerialSource:
        """A source for ``serial:///dev/PATH?key=value&...``; keyword options override the URI's."""
        port, options = split_uri(uri, "serial")
        if not port:
            raise ConfigError(f"{uri!r} names no port; write e.g. serial:///dev/ttyUSB0?baud=921600&format=fe1")
        options.update(overrides)
        return cls(port, **parse_options(f"serial source {uri!r}", options, OPTIONS))

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def stats(self) -> dict[str, int]:
        """Decoder counters plus ``reconnects`` and ``disconnects``."""
        out = self._decoder.stats.as_dict()
        out["reconnects"] = self.reconnects
        out["disconnects"] = self.disconnects
        return out

    def _scale_for(self, channels: int) -> np.ndarray:
        given = self._scale_given
        if len(given) not in (1, channels):
            raise ConfigError(f"scale has {len(given)} factors {given!r} but the sensor has {channels} channels; "
                              f"give 1 or {channels}")
        return np.asarray(given if len(given) > 1 else given[0], dtype=np.float32)

    # -- opening and closing -------------------------------------------------------------

    def open(self) -> SerialSource:
        """Open the port (idempotent). Absent port: SourceError listing the ports present, unless ``wait``.

        A closed source stays closed: make a new one to read again.
        """
        if self._serial is not None:
            return self
        if self._closing.is_set():
            raise SourceError(f"serial source {self.port!r} is closed; create a new source to read again")
        serial = _import_serial()
        if self.wait:
            ser = self._open_with_backoff(serial, "opening")
            if ser is None:
                raise SourceError(f"serial source {self.port!r} was closed while waiting for the port to appear")
        else:
            ser = self._open_once(serial)
        with self._lock:
            self._serial = ser
        log.info("serial port %s open at %d baud, format %s", self.port, self.baud, self.format)
        return self

    def close(self) -> None:
        """Close the port and end ``blocks()`` for good; safe from any thread, idempotent."""
        self._closing.set()
        with self._lock:
            if not self._busy:
                self._close_port_locked()

    def __enter__(self) -> SerialSource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_port_locked(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except OSError as e:
                log.debug("closing serial port %s: %s", self.port, e)

    def _open_once(self, serial: Any) -> Any:
        if not os.path.exists(self.port):
            raise SourceError(
                f"serial port {self.port!r} does not exist; {available_ports()}. "
                "Check the cable and the udev rule, or pass wait=true to wait for the device"
            )
        try:
            ser = serial.Serial(self.port, self.baud, timeout=self.timeout, exclusive=True)
        except ValueError as e:
            raise ConfigError(f"serial port {self.port!r} rejects its settings (baud={self.baud}): {e}") from None
        except OSError as e:  # pyserial's SerialException is an OSError
            code = e.errno if e.errno is not None else getattr(e.__context__, "errno", None)
            if code == errno.EACCES:
                raise SourceError(
                    f"permission denied opening serial port {self.port!r}; add the service user to the "
                    "'dialout' group or install the factoryedge udev rule"
                ) from None
            if "lock" in str(e).lower():
                raise SourceError(f"serial port {self.port!r} is in use by another process: {e}") from None
            raise SourceError(f"cannot open serial port {self.port!r}: {e}") from None
        ser.reset_input_buffer()  # bytes queued before we opened are stale
        st = os.fstat(ser.fileno())
        self._node = (st.st_dev, st.st_ino, st.st_rdev)
        self._next_node_check = time.monotonic() + _NODE_CHECK_S
        return ser

    def _open_with_backoff(self, serial: Any, why: str) -> Any:
        delay, attempt, started = self.reconnect_min, 0, time.monotonic()
        while not self._closing.is_set():
            attempt += 1
            try:
                ser = self._open_once(serial)
            except SourceError as e:
                log.info("serial port %s: %s attempt %d failed (%s); next in %.2f s", self.port, why, attempt, e, delay)
                if self._closing.wait(delay):
                    break
                delay = min(delay * 2, self.reconnect_max)
                continue
            log.info("serial port %s: open after %d attempt(s), %.2f s", self.port, attempt, time.monotonic() - started)
            return ser
        return None

    def _reconnect(self, reason: str) -> bool:
        """Close, then reopen with backoff; False if closed meanwhile."""
        self.disconnects += 1
        log.warning("serial port %s lost (%s); reconnecting", self.port, reason)
        with self._lock:
            self._close_port_locked()
        self._decoder.reset()  # a half frame from before the loss must not join the next bytes
        self._gap_pending = True
        ser = self._open_with_backoff(_import_serial(), "reconnect")
        with self._lock:
            if ser is None or self._closing.is_set():
                if ser is not None:
                    ser.close()
                return False
            self._serial = ser
        self.reconnects += 1
        log.warning("serial port %s reconnected (reconnect %d)", self.port, self.reconnects)
        return True

    # -- reading ---------------------------------------------------------------------------

    def blocks(self) -> Iterator[SampleBlock]:
        """Sample blocks as they arrive, until ``close()``; reconnects transparently."""
        if self._closing.is_set():
            return
        self.open()
        while not self._closing.is_set():
            with self._lock:
                ser = self._serial
                if ser is None or self._closing.is_set():
                    break
                self._busy = True
            try:
                data = ser.read(max(1, ser.in_waiting))
                failure = None
            except OSError as e:
                data, failure = b"", f"read failed: {e}"
            finally:
                with self._lock:
                    self._busy = False
                    if self._closing.is_set():
                        self._close_port_locked()
            if failure is None and not data:
                failure = self._node_changed()
            if failure is not None:
                if self._closing.is_set() or not self._reconnect(failure):
                    break
                continue
            if data:
                t_mono, t_wall = time.monotonic(), time.time()
                frames = self._decoder.feed(data)
                if frames:
                    yield from self._to_blocks(frames, t_mono, t_wall)

    def _node_changed(self) -> str | None:
        """Why the open device node is gone, or None; checked only while the port is quiet."""
        now = time.monotonic()
        if now < self._next_node_check:
            return None
        self._next_node_check = now + _NODE_CHECK_S
        try:
            st = os.stat(self.port)
        except OSError as e:
            return f"device node gone: {e.strerror or e}"
        if (st.st_dev, st.st_ino, st.st_rdev) != self._node:
            return "device node replaced"
        return None

    def _to_blocks(self, frames: list[Frame], t_mono: float, t_wall: float) -> Iterator[SampleBlock]:
        # one block per run of frames without loss, so a gap always starts a block
        start = 0
        for k in range(1, len(frames) + 1):
            if k < len(frames) and not frames[k].gap:
                continue
            group = frames[start:k]
            start = k
            yield self._block(group, t_mono, t_wall)

    def _block(self, group: list[Frame], t_mono: float, t_wall: float) -> SampleBlock:
        first = group[0]
        for f in group:
            ch = f.samples.shape[1]
            if self.channels is None:
                self.channels = ch
                log.info("serial port %s: sensor sends %d channels", self.port, ch)
            if ch != self.channels:
                raise SourceError(
                    f"serial port {self.port!r}: the sensor sends {ch} channels but channels={self.channels} "
                    "was configured; fix the URI or the sensor firmware"
                )
        if self._scale is None:
            self._scale = self._scale_for(self.channels)
        raw = first.samples if len(group) == 1 else np.concatenate([f.samples for f in group])
        samples = raw.astype(np.float32)
        samples *= self._scale
        gap = first.gap or self._gap_pending
        self._gap_pending = False
        return SampleBlock(
            samples, t_mono, t_wall, first.seq, gap, first.dropped_before, first.timestamp_us, self.stats
        )
