"""A vibration sensor node in software: samples out over a serial line at the true rate.

Streams a recording or the bearing simulator in the fe1 or CSV wire format to a real serial
port, or to a pseudo-terminal it creates (the demo and the tests read that pty through the
real serial source). Optional corruption flips bytes and inserts garbage so the reader's
resynchronisation is exercised as on a noisy RS-485 line. A periodic mode plays a wireless
snapshot sensor: a burst of samples every ``period`` seconds, frames numbered consecutively
across bursts, with the fe1 burst flag and/or device timestamps if asked.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.data.recording import Recording
from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.sources.wire import encode_fe1_frame

log = logging.getLogger(__name__)

FORMATS = ("fe1", "csv")


@dataclass
class StreamStats:
    frames: int = 0
    samples: int = 0
    bytes: int = 0
    corrupted: int = 0
    bursts: int = 0


class PtyEndpoint:
    """A raw-mode pseudo-terminal; readers open ``path``, the streamer writes to the master.

    Writes never block: like a sensor on a serial line, the stream goes on whether or not
    anyone reads it, and what finds no room is lost (counted in ``dropped_frames``).
    """

    def __init__(self, link: str | Path | None = None):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # binary-safe: no echo, no newline translation
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.dropped_frames = 0
        self.link = Path(link) if link else None
        if self.link:
            if self.link.is_symlink() or self.link.exists():
                self.link.unlink()
            self.link.symlink_to(self.path)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 0.05
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                # No reader keeping up. Give a slow reader a moment, then drop the rest of
                # this frame as a serial line would; the reader resyncs on the next one.
                if time.monotonic() > deadline:
                    self.dropped_frames += 1
                    return
                time.sleep(0.001)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link and self.link.is_symlink():
            self.link.unlink()


class SerialEndpoint:
    """A real serial port (USB adapter, UART) opened with pyserial."""

    def __init__(self, port: str, baud: int):
        from factoryedge.runtimes.sources.serial_source import _import_serial

        serial = _import_serial()
        try:
            self._port = serial.Serial(port, baudrate=baud, write_timeout=2.0)
        except (serial.SerialException, OSError) as e:
            raise SourceError(f"cannot open serial port {port} for writing: {e}") from None
        self.path = port

    def write(self, data: bytes) -> None:
        self._port.write(data)

    def close(self) -> None:
        self._port.close()


class SensorStreamer:
    """Writes a recording's samples as frames, paced to the recording's sample rate.

    int16 samples are ``round(value / scale)``: the receiving source's ``scale`` option must
    be the same number (physical units per LSB).

    ``burst`` (samples) turns it into a periodic-snapshot sensor: the recording's consecutive
    stretches of ``burst`` samples go out one every ``period`` seconds (sensor time; the
    pause shrinks with ``speed``), in frames of at most ``frame`` samples, the sequence
    number running on across bursts as from a sensor that loses nothing; samples after the
    last whole burst are not sent. ``burst_flag`` sets fe1's burst-start flag on each
    burst's first frame. ``timestamps`` (fe1) stamps every frame with the sensor clock of
    its first sample, in microseconds from the stream's start; in periodic mode that clock
    runs on through the pauses.
    """

    def __init__(self, recording: Recording, endpoint, fmt: str = "fe1", frame: int = 256, scale: float = 1 / 2048,
                 speed: float = 1.0, corrupt: float = 0.0, loop: bool = False, seed: int = 0,
                 burst: int | None = None, period: float = 10.0, burst_flag: bool = False, timestamps: bool = False):
        if fmt not in FORMATS:
            raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        if not 0.0 <= corrupt < 1.0:
            raise ConfigError(f"corrupt must be a probability per frame in [0, 1), got {corrupt}")
        if speed < 0:
            raise ConfigError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
        self._check_periodic(recording, fmt, burst, period, burst_flag, timestamps)
        self.rec, self.endpoint, self.fmt = recording, endpoint, fmt
        self.frame, self.scale, self.speed, self.corrupt, self.loop = frame, scale, speed, corrupt, loop
        self.burst, self.period, self.burst_flag, self.timestamps = burst, period, burst_flag, timestamps
        self.rng = np.random.default_rng(seed)
        self.stats = StreamStats()
        self._stop = threading.Event()
        counts = np.round(recording.signal / scale)
        if np.abs(counts).max(initial=0) > 32767:
            raise ConfigError(f"signal exceeds the int16 range at scale {scale:g} per LSB; use a larger scale")
        self._counts = counts.astype(np.int16)

    @staticmethod
    def _check_periodic(rec: Recording, fmt: str, burst, period: float, burst_flag: bool, timestamps: bool) -> None:
        if fmt != "fe1" and (burst_flag or timestamps):
            raise ConfigError(f"burst_flag and timestamps are fe1 header fields; format {fmt!r} cannot carry them")
        if burst is None:
            if burst_flag:
                raise ConfigError("burst_flag marks the first frame of each burst; give burst (samples per burst) too")
            return
        if isinstance(burst, bool) or not isinstance(burst, (int, np.integer)) or not 1 <= burst <= len(rec.signal):
            raise ConfigError(f"burst={burst!r} must be a whole number of samples from 1 to the recording's "
                              f"{len(rec.signal)}")
        if not period >= burst / rec.sample_rate:
            raise ConfigError(f"period={period!r} s is shorter than one burst ({burst} samples at "
                              f"{rec.sample_rate:g} Hz = {burst / rec.sample_rate:g} s)")

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> StreamStats:
        """Stream until the recording ends (or forever with ``loop``) or ``stop()``."""
        fs = self.rec.sample_rate
        seq = 0
        started = time.monotonic()
        for chunk, t_s, first in self._frames():
            # a frame goes out when its first sample is due, and the next not before its last
            if self._stop.is_set() or not self._wait_until(started, t_s):
                break
            data = self._encode(chunk, seq, t_s, first)
            seq = (seq + 1) % (1 << 32)
            if self.corrupt and self.rng.random() < self.corrupt:
                data = self._damage(data)
                self.stats.corrupted += 1
            try:
                self.endpoint.write(data)
            except OSError as e:
                log.warning("sensor output closed: %s", e)
                return self.stats
            self.stats.frames += 1
            self.stats.samples += len(chunk)
            self.stats.bytes += len(data)
            self.stats.bursts += first
            if not self._wait_until(started, t_s + len(chunk) / fs):
                break
        return self.stats

    def _wait_until(self, started: float, t_s: float) -> bool:
        """Sleep until sensor time ``t_s`` (scaled by ``speed``); False if stopped meanwhile."""
        if self.speed:
            delay = started + t_s / self.speed - time.monotonic()
            if delay > 0:
                return not self._stop.wait(delay)
        return True

    def _frames(self):
        """(samples, sensor time of the first one in s, first of a burst) for every frame to send."""
        fs, n, f = self.rec.sample_rate, len(self._counts), self.frame
        for p in itertools.count() if self.loop else range(1):
            if self.burst is None:
                for i in range(0, n, f):
                    yield self._counts[i : i + f], (p * n + i) / fs, False
                continue
            per_pass = n // self.burst
            for j in range(per_pass):
                t0 = (p * per_pass + j) * self.period
                samples = self._counts[j * self.burst : (j + 1) * self.burst]
                for i in range(0, self.burst, f):
                    yield samples[i : i + f], t0 + i / fs, i == 0

    def _encode(self, chunk: np.ndarray, seq: int, t_s: float, first: bool) -> bytes:
        if self.fmt == "fe1":
            ts = round(t_s * 1e6) if self.timestamps else None
            return encode_fe1_frame(chunk, seq, "int16", ts, first and self.burst_flag)
        lines = "\n".join(",".join(str(v) for v in row) for row in chunk.tolist())
        return (lines + "\n").encode("ascii")

    def _damage(self, data: bytes) -> bytes:
        buf = bytearray(data)
        if self.rng.random() < 0.5:
            for _ in range(int(self.rng.integers(1, 4))):
                buf[int(self.rng.integers(len(buf)))] ^= int(self.rng.integers(1, 256))
        else:
            at = int(self.rng.integers(len(buf)))
            buf[at:at] = self.rng.integers(0, 256, size=int(self.rng.integers(1, 64)), dtype=np.uint8).tobytes()
        return bytes(buf)
