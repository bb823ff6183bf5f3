"""The one serial transport under every serial plugin: open with clear errors, reconnect, close.

``SerialSource`` (sensor samples) and ``SerialTrigger`` (part ids from a PLC) both read
through a ``SerialPort``, so both survive unplugging the same way. pyserial is imported only
when a port is opened; without it the error names the extra to install.

Threading: one thread calls ``open``, ``read`` and ``reconnect``; ``close()`` may be called
from any thread. A read in progress is never closed under the reader (pyserial raises odd
errors, and the fd number could be reused): ``close()`` marks the port closing and wakes
the read, and the reader closes the fd when its read returns.
"""
from __future__ import annotations

import errno
import glob
import logging
import os
import threading
import time
from typing import Any

from factoryedge.errors import ConfigError, SourceError, missing_dependency

log = logging.getLogger(__name__)

_PORT_PATTERNS = ("/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyTHS*", "/dev/serial/by-id/*")
# how often a quiet port checks that its device node still is the one it opened
NODE_CHECK_S = 0.5


def import_serial(purpose: str = "reading a serial sensor") -> Any:
    """The pyserial module; BackendUnavailableError naming the ``device`` extra if it is missing.

    ``purpose`` ends up in the message ("reading serial part triggers needs ...").
    """
    try:
        import serial
    except ImportError:
        raise missing_dependency("serial", "device", purpose) from None
    if not hasattr(serial, "Serial"):
        raise missing_dependency("serial", "device", f"{purpose} (the installed 'serial' is not pyserial)")
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


class PortLost(SourceError):
    """The open port failed, or its device node vanished or was replaced; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PortOpenError(SourceError):
    """The port cannot be opened; ``reason`` is the message without the port's name, for wrapping."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SerialPort:
    """A serial port opened by device path, reopened with exponential backoff when it is lost.

    The path may be a udev symlink (``/dev/factoryedge-vib0``): while the port is quiet,
    ``read`` checks every ``NODE_CHECK_S`` that the path still leads to the node it opened,
    since a re-enumerated USB adapter can leave the old fd open but silent forever.
    ``reconnect`` waits ``reconnect_min`` after the first failed attempt, doubling up to
    ``reconnect_max``. ``exclusive`` takes pyserial's advisory lock, so a second process
    opening the same port fails with "in use". ``label`` starts every message ("serial port
    '/dev/ttyUSB0' does not exist ..."), ``purpose`` names what pyserial is needed for,
    ``wait_hint`` adds "or pass wait=true" where the owning plugin has that option, and
    ``logger`` is the owning plugin's, so its attempts are logged under the plugin's name.
    """

    def __init__(
        self,
        path: str,
        *,
        baud: int,
        timeout: float = 0.05,
        reconnect_min: float = 0.1,
        reconnect_max: float = 5.0,
        exclusive: bool = True,
        label: str = "serial port",
        purpose: str = "reading a serial sensor",
        wait_hint: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        if reconnect_min > reconnect_max:
            raise ConfigError(
                f"reconnect_min={reconnect_min} exceeds reconnect_max={reconnect_max}; "
                "the backoff doubles from min up to max"
            )
        self.path = path
        self.baud, self.timeout, self.exclusive = baud, timeout, exclusive
        self.reconnect_min, self.reconnect_max = reconnect_min, reconnect_max
        self.label, self.purpose, self.wait_hint = label, purpose, wait_hint
        self.log = logger or log
        self.disconnects = 0
        self.reconnects = 0
        self.attempts = 0  # opening attempts, first and reconnects
        self._serial: Any = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._busy = False  # the reader is inside ser.read(); close() leaves the fd to it
        self._node: tuple[int, int, int] | None = None
        self._next_node_check = 0.0

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called; the port never opens again."""
        return self._closing.is_set()

    # -- opening and closing -------------------------------------------------------------

    def open(self, wait: bool = False) -> SerialPort:
        """Open the port (idempotent); ``PortOpenError`` saying why not, or with ``wait`` retry until it appears.

        Waiting uses the reconnect backoff and ends with SourceError if ``close()`` is called.
        """
        if self._serial is not None:
            return self
        if self.closed:
            raise SourceError(f"{self.label} {self.path!r} is closed; create a new one to open it again")
        serial = import_serial(self.purpose)
        ser = self._open_with_backoff(serial, "opening") if wait else self._open_once(serial)
        if ser is None:
            raise SourceError(f"{self.label} {self.path!r} was closed while waiting for the port to appear")
        with self._lock:
            if self.closed:  # close() ran while we were opening
                ser.close()
                raise SourceError(f"{self.label} {self.path!r} was closed while it was being opened")
            self._serial = ser
        return self

    def close(self) -> None:
        """Close for good; safe from any thread and idempotent. A read in progress returns b"" at once.

        On POSIX pyserial can wake a blocked read (``cancel_read``); elsewhere the read ends
        when its ``timeout`` runs out. Either way the reader closes the fd, not this thread.
        """
        self._closing.set()
        with self._lock:
            if not self._busy:
                self._close_port_locked()
                return
            cancel = getattr(self._serial, "cancel_read", None)
            if cancel is not None:
                try:
                    cancel()
                except OSError as e:  # the read still ends within its timeout
                    self.log.debug("waking the read on %s %s: %s", self.label, self.path, e)

    def _close_port_locked(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except OSError as e:
                self.log.debug("closing %s %s: %s", self.label, self.path, e)

    def _open_once(self, serial: Any) -> Any:
        where = f"{self.label} {self.path!r}"
        if not os.path.exists(self.path):
            hint = ", or pass wait=true to wait for the device" if self.wait_hint else ""
            tail = f"{available_ports()}. Check the cable and the udev rule{hint}"
            raise PortOpenError(f"{where} does not exist; {tail}", f"it does not exist; {tail}")
        try:
            ser = serial.Serial(self.path, self.baud, timeout=self.timeout, exclusive=self.exclusive)
        except ValueError as e:
            raise ConfigError(f"{where} rejects its settings (baud={self.baud}): {e}") from None
        except OSError as e:  # pyserial's SerialException is an OSError
            code = e.errno if e.errno is not None else getattr(e.__context__, "errno", None)
            if code == errno.EACCES:
                fix = "add the service user to the 'dialout' group or install the factoryedge udev rule"
                raise PortOpenError(f"permission denied opening {where}; {fix}", f"permission denied; {fix}") from None
            if "lock" in str(e).lower():
                raise PortOpenError(f"{where} is in use by another process: {e}",
                                    f"it is in use by another process: {e}") from None
            raise PortOpenError(f"cannot open {where}: {e}", str(e)) from None
        ser.reset_input_buffer()  # bytes queued before we opened are stale
        st = os.fstat(ser.fileno())
        self._node = (st.st_dev, st.st_ino, st.st_rdev)
        self._next_node_check = time.monotonic() + NODE_CHECK_S
        return ser

    def _open_with_backoff(self, serial: Any, why: str) -> Any:
        """An open pyserial port, or None if ``close()`` was called first."""
        delay, attempt, started = self.reconnect_min, 0, time.monotonic()
        while not self._closing.is_set():
            attempt += 1
            self.attempts += 1  # the reconnect loop is alive (the program's watchdog progress)
            try:
                ser = self._open_once(serial)
            except SourceError as e:
                self.log.info("%s %s: %s attempt %d failed (%s); next in %.2f s",
                              self.label, self.path, why, attempt, e, delay)
                if self._closing.wait(delay):
                    break
                delay = min(delay * 2, self.reconnect_max)
                continue
            self.log.info("%s %s: open after %d attempt(s), %.2f s",
                          self.label, self.path, attempt, time.monotonic() - started)
            return ser
        return None

    def reconnect(self, reason: str) -> bool:
        """Count a disconnect, close, then reopen with backoff; False if ``close()`` came first.

        Call it from the reading thread after ``read`` raised ``PortLost``.
        """
        self.disconnects += 1
        self.log.warning("%s %s lost (%s); reconnecting", self.label, self.path, reason)
        with self._lock:
            self._close_port_locked()
        ser = self._open_with_backoff(import_serial(self.purpose), "reconnect")
        with self._lock:
            if ser is None or self._closing.is_set():
                if ser is not None:
                    ser.close()
                return False
            self._serial = ser
        self.reconnects += 1
        self.log.warning("%s %s reconnected (reconnect %d)", self.label, self.path, self.reconnects)
        return True

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> bytes:
        """The bytes waiting (at least one), or b"" after ``timeout`` of silence or once closed.

        Raises ``PortLost`` when the read fails or the device node is gone or replaced;
        SourceError if the port was never opened.
        """
        with self._lock:
            ser = self._serial
            if self._closing.is_set():
                return b""
            if ser is None:
                raise SourceError(f"{self.label} {self.path!r} is not open; call open() first")
            self._busy = True
        failure = None
        try:
            data = ser.read(max(1, ser.in_waiting))
        except OSError as e:
            data, failure = b"", f"read failed: {e}"
        finally:
            with self._lock:
                self._busy = False
                if self._closing.is_set():
                    self._close_port_locked()
        if self._closing.is_set():
            return b""
        if failure is None and not data:
            failure = self._node_changed()
        if failure is not None:
            raise PortLost(failure)
        return data

    def _node_changed(self) -> str | None:
        """Why the open device node is gone, or None; rate-limited, as stat() on every read is waste."""
        now = time.monotonic()
        if now < self._next_node_check:
            return None
        self._next_node_check = now + NODE_CHECK_S
        try:
            st = os.stat(self.path)
        except OSError as e:
            return f"device node gone: {e.strerror or e}"
        if (st.st_dev, st.st_ino, st.st_rdev) != self._node:
            return "device node replaced"
        return None
