"""SerialPort, the transport under the serial source and trigger, against real pseudo-terminals."""
from __future__ import annotations

import logging
import os
import sys
import threading

import pytest

from factoryedge.errors import BackendUnavailableError, ConfigError, SourceError
from factoryedge.runtimes.serial_port import PortLost, PortOpenError, SerialPort
from tests.runtimes.sources.ptys import Pty, poll

pytest.importorskip("serial", reason="pyserial is the 'device' extra")

LOGGER = "tests.serial_port"


def make(path, **kw) -> SerialPort:
    kw.setdefault("baud", 115200)
    kw.setdefault("timeout", 0.02)
    kw.setdefault("reconnect_min", 0.01)
    kw.setdefault("reconnect_max", 0.05)
    return SerialPort(str(path), logger=logging.getLogger(LOGGER), **kw)


def read_bytes(port: SerialPort, n: int, timeout: float = 5.0) -> bytes:
    """Read until ``n`` bytes arrived (each read waits up to the port's timeout); PortLost propagates."""
    chunks: list[bytes] = []
    assert poll(lambda: chunks.append(port.read()) or sum(map(len, chunks)) >= n, timeout, 0), chunks
    return b"".join(chunks)


def read_until_lost(port: SerialPort, timeout: float = 5.0) -> PortLost:
    """Read until the port reports itself lost; that PortLost."""
    lost: list[PortLost] = []

    def attempt() -> bool:
        try:
            port.read()
        except PortLost as e:
            lost.append(e)
        return bool(lost)

    assert poll(attempt, timeout, 0), "the port was never reported lost"
    return lost[0]


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def test_open_and_read_what_the_device_sends(pty):
    port = make(pty.path).open()
    try:
        assert port.is_open and port.open() is port  # idempotent
        pty.write(b"hello\nworld\n")
        assert read_bytes(port, 12) == b"hello\nworld\n"
        assert port.read() == b""  # silence: empty after one timeout, not an error
        assert (port.disconnects, port.reconnects) == (0, 0)
    finally:
        port.close()
    assert not port.is_open and port.closed


def test_unplug_and_replug_behind_the_same_name_is_one_reconnect(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    link = tmp_path / "ttyPLC0"  # stands in for a udev symlink
    first, second = Pty(), Pty()
    result: list[bool] = []
    try:
        os.symlink(first.path, link)
        port = make(link).open()
        first.write(b"A-1\n")
        assert read_bytes(port, 4) == b"A-1\n"

        first.close()  # unplug: the read fails (EIO) and the node disappears
        link.unlink()
        lost = read_until_lost(port)
        assert "read failed" in lost.reason or "device node gone" in lost.reason
        worker = threading.Thread(target=lambda: result.append(port.reconnect(lost.reason)), daemon=True)
        worker.start()
        assert poll(lambda: "reconnect attempt 2 failed" in caplog.text), caplog.text
        assert port.disconnects == 1 and port.reconnects == 0 and not port.is_open

        os.symlink(second.path, link)  # replug: a new device node behind the same name
        worker.join(timeout=5)
        assert result == [True] and port.reconnects == 1 and port.is_open
        second.write(b"B-2\n")
        assert read_bytes(port, 4) == b"B-2\n"
        assert "lost (" in caplog.text and "reconnected (reconnect 1)" in caplog.text
    finally:
        port.close()
        first.close()
        second.close()


def test_a_quiet_port_replaced_behind_its_name_is_reported_lost(tmp_path):
    link = tmp_path / "ttyVIB0"
    first, second = Pty(), Pty()
    try:
        os.symlink(first.path, link)
        port = make(link).open()
        link.unlink()  # the old node stays open but silent, as a stuck USB adapter's can
        os.symlink(second.path, link)
        assert read_until_lost(port).reason == "device node replaced"
        assert port.reconnect("device node replaced") and port.reconnects == 1
        second.write(b"x")
        assert read_bytes(port, 1) == b"x"
    finally:
        port.close()
        first.close()
        second.close()


def test_close_from_another_thread_ends_a_blocked_read(pty):
    port = make(pty.path, timeout=60.0).open()  # a read that would block for a minute
    returned: list[bytes] = []
    reader = threading.Thread(target=lambda: returned.append(port.read()), daemon=True)
    reader.start()
    assert poll(lambda: port._busy), "the read never started"
    port.close()
    reader.join(timeout=10)
    assert not reader.is_alive(), "close() did not end the blocked read"
    assert returned == [b""] and not port.is_open and port.read() == b""
    with pytest.raises(SourceError, match="is closed"):
        port.open()


def test_close_ends_a_reconnect_backoff_wait(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    port = make(tmp_path / "ttyGONE", reconnect_min=60.0, reconnect_max=60.0)
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(port.reconnect("test")), daemon=True)
    worker.start()
    assert poll(lambda: "reconnect attempt 1 failed" in caplog.text and "next in 60.00 s" in caplog.text)
    port.close()
    worker.join(timeout=10)
    assert result == [False] and port.disconnects == 1 and port.reconnects == 0


def test_wait_opens_a_port_once_it_appears(tmp_path, caplog, pty):
    caplog.set_level(logging.INFO, logger=LOGGER)
    link = tmp_path / "ttyLATE"
    port = make(link)
    opener = threading.Thread(target=lambda: port.open(wait=True), daemon=True)
    opener.start()
    assert poll(lambda: "opening attempt 2 failed" in caplog.text)
    os.symlink(pty.path, link)
    opener.join(timeout=5)
    assert port.is_open
    port.close()


def test_a_missing_port_names_it_lists_the_ports_and_hints_only_when_asked():
    with pytest.raises(PortOpenError) as err:
        make("/dev/ttyUSB97", label="serial trigger port").open()
    assert str(err.value).startswith("serial trigger port '/dev/ttyUSB97' does not exist; ")
    assert err.value.reason.startswith("it does not exist; ") and "wait=true" not in str(err.value)
    assert "ports present:" in str(err.value) or "no serial ports found (looked for /dev/ttyUSB*" in str(err.value)
    with pytest.raises(PortOpenError, match="or pass wait=true"):
        make("/dev/ttyUSB97", wait_hint=True).open()


def test_a_second_exclusive_open_says_the_port_is_in_use(pty):
    first = make(pty.path).open()
    try:
        with pytest.raises(PortOpenError, match=f"'{pty.path}' is in use by another process"):
            make(pty.path).open()
    finally:
        first.close()


def test_bad_settings_and_misuse_say_what_is_valid(pty):
    with pytest.raises(ConfigError, match="reconnect_min=2 exceeds reconnect_max=1; the backoff doubles"):
        make(pty.path, reconnect_min=2, reconnect_max=1)
    with pytest.raises(SourceError, match="is not open; call open"):
        make(pty.path).read()


def test_without_pyserial_opening_names_the_extra(monkeypatch, pty):
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(BackendUnavailableError, match=r"reading serial part triggers.*factoryedge\[device\]"):
        make(pty.path, purpose="reading serial part triggers").open()
