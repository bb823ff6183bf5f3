"""A vibration sensor on a serial port (USB-UART, CDC-ACM or a Jetson UART), as sample blocks.

Opened from ``serial:///dev/ttyUSB0?baud=921600&format=fe1&channels=3&scale=0.001``.
pyserial is imported only when the port is opened. The source survives unplugging: a
failed read, or the device node vanishing or being replaced while the port is quiet,
closes the port and reopens it with exponential backoff, logging each attempt; the first
block after a reconnect has ``gap=True``. Only one thread iterates ``blocks()``; ``close()``
may be called from any thread and ends the iteration within one read timeout.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes import clock
from factoryedge.runtimes.contracts import UriPlugin
from factoryedge.runtimes.options import as_bool, as_choice, as_float, as_int, as_scale, parse_options, split_uri
from factoryedge.runtimes.serial_port import PortLost, SerialPort, import_serial
from factoryedge.runtimes.sources.base import SampleBlock
from factoryedge.runtimes.sources.wire import HEADER_SIZE, CsvLineDecoder, Fe1Decoder, Frame

log = logging.getLogger(__name__)

_import_serial = import_serial  # the devkit's sensor node imports it from here

# Decoder counters that mean bytes from the sensor were lost or unusable, as the warning names them.
TROUBLE = {
    "crc_errors": "CRC errors", "header_errors": "bad frame headers", "resyncs": "resyncs",
    "malformed_lines": "malformed lines", "dropped_frames": "dropped frames", "truncated": "truncated frames",
    "seq_restarts": "sequence restarts", "bytes_discarded": "bytes discarded",
}

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


class SerialSource(UriPlugin):
    """Sample blocks from a serial sensor speaking fe1 frames or CSV lines.

    ``rate`` is the sensor's sample rate in Hz as configured in its firmware: neither fe1
    frames nor CSV lines carry it, so the URI declares it (``rate=25600``) and the device
    program refuses a bundle trained at another rate. ``scale`` converts raw values to
    physical units (e.g. g per LSB), one factor or one per channel. ``channels`` is checked
    against what the device sends (a mismatch raises ``SourceError``); None learns it from
    the first frame. ``wait`` keeps retrying a port that is absent at open instead of
    failing. ``timeout`` bounds each read, and so how quickly ``close()`` takes effect.
    Opening, the node check and reconnecting are ``serial_port.SerialPort``'s.

    A periodic-snapshot sensor's bursts are never joined: an fe1 frame flagged as a burst's
    first, or (``rate`` given) one whose device timestamp leaves a pause after the previous
    frame or goes back before its end, starts a block with ``gap=True``; ``stats`` counts
    them in ``bursts`` and ``clock_jumps``, not in ``dropped_frames`` (see ``Fe1Decoder``).
    """

    RATE_BEFORE_OPEN = True
    OPTIONS = OPTIONS
    # At most one WARNING per interval, the first one interval after the port opened: a
    # summary of the ``TROUBLE`` counters' increase, logged from the read loop, so a stream
    # of pure garbage (no frame, no block) is reported too.
    WARN_INTERVAL_S = 30.0

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
        # the transport checks reconnect_min <= reconnect_max, with the message the option names
        self._port = SerialPort(
            port, baud=opts["baud"], timeout=opts["timeout"], reconnect_min=opts["reconnect_min"],
            reconnect_max=opts["reconnect_max"], label="serial port", purpose="reading a serial sensor",
            wait_hint=True, logger=log,
        )
        self.port = port
        self.sample_rate: float | None = opts.get("rate")
        self.baud: int = opts["baud"]
        self.format: str = opts["format"]
        self.channels: int | None = opts.get("channels")
        self.timeout: float = opts["timeout"]
        self.polls = 0
        self.wait: bool = opts["wait"]
        self.reconnect_min: float = opts["reconnect_min"]
        self.reconnect_max: float = opts["reconnect_max"]
        self._scale_given: tuple[float, ...] = opts["scale"]
        self._scale = self._scale_for(self.channels) if self.channels else None
        # the rate lets fe1 device timestamps mark the bursts of a periodic-snapshot sensor
        self._decoder = (Fe1Decoder(self.sample_rate or None) if self.format == "fe1"
                         else CsvLineDecoder(self.channels, skip_first_line=True))
        self._gap_pending = False
        self._warned = self._decoder.stats.snapshot()
        self._warned_at = self._warn_due = 0.0
        self._synced = False

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
        return self._port.is_open

    @property
    def reconnects(self) -> int:
        return self._port.reconnects

    @property
    def disconnects(self) -> int:
        return self._port.disconnects

    @property
    def heartbeat(self) -> tuple[int, int]:
        """Changes while the read loop comes around or the port is being reopened: alive, data or not."""
        return self.polls, self._port.attempts

    @property
    def stats(self) -> dict[str, int]:
        """Decoder counters plus ``reconnects`` and ``disconnects``."""
        out = self._decoder.stats.as_dict()
        out["reconnects"] = self._port.reconnects
        out["disconnects"] = self._port.disconnects
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
        if self._port.is_open:
            return self
        if self._port.closed:
            raise SourceError(f"serial source {self.port!r} is closed; create a new source to read again")
        self._port.open(wait=self.wait)
        self._warned_at = time.monotonic()
        self._warn_due = self._warned_at + self.WARN_INTERVAL_S
        log.info("serial port %s open at %d baud, format %s", self.port, self.baud, self.format)
        return self

    def close(self) -> None:
        """Close the port and end ``blocks()`` for good; safe from any thread, idempotent."""
        self._port.close()

    def __enter__(self) -> SerialSource:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def blocks(self) -> Iterator[SampleBlock]:
        """Sample blocks as they arrive, until ``close()``; reconnects transparently."""
        if self._port.closed:
            return
        self.open()
        while not self._port.closed:
            self.polls += 1  # the loop came around: the program's watchdog progress
            try:
                data = self._port.read()
            except PortLost as e:
                self._decoder.reset()  # a half frame from before the loss must not join the next bytes
                self._gap_pending = True
                if not self._port.reconnect(e.reason):
                    break
                continue
            if data:
                t_mono, t_wall = time.monotonic(), clock.wall()
                frames = self._decoder.feed(data)
                if frames and not self._synced:
                    self._first_frames(frames[0])
                self._warn_if_troubled(t_mono)
                if frames:
                    yield from self._to_blocks(frames, t_mono, t_wall)
            else:
                self._warn_if_troubled(time.monotonic())

    def _first_frames(self, frame: Frame) -> None:
        """Joining a running stream mid-frame (or mid-line) is not trouble: leave it out of the warnings."""
        self._synced = True
        st = self._decoder.stats
        if self.format == "fe1":
            allowance = frame.samples.nbytes + HEADER_SIZE + 8 + 4  # one frame: header, timestamp, payload, CRC
        else:
            allowance = self._decoder.max_line + 1
        if (st.crc_errors, st.header_errors, st.malformed_lines) == (0, 0, 0) and st.resyncs <= 1 \
                and st.bytes_discarded <= allowance:
            self._warned.resyncs, self._warned.bytes_discarded = st.resyncs, st.bytes_discarded

    def _warn_if_troubled(self, now: float) -> None:
        """Log one WARNING summarising the decoder's trouble since the last one, at most once per interval."""
        if now < self._warn_due:
            return
        self._warn_due = now + self.WARN_INTERVAL_S
        current, last = self._decoder.stats.snapshot(), self._warned
        increase = {name: getattr(current, name) - getattr(last, name) for name in TROUBLE}
        if not any(v > 0 for v in increase.values()):
            return
        summary = ", ".join(f"{n} {TROUBLE[name]}" for name, n in increase.items() if n > 0)
        log.warning("serial %s: %s in the last %.0f s (%d good %s; format %s, %d baud)", self.port, summary,
                    now - self._warned_at, current.frames_ok - last.frames_ok,
                    "frames" if self.format == "fe1" else "lines", self.format, self.baud)
        self._warned, self._warned_at = current, now

    def _to_blocks(self, frames: list[Frame], t_mono: float, t_wall: float) -> Iterator[SampleBlock]:
        # one block per run of frames without loss or burst start, so a gap always starts a block
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
