"""SerialSource against real pseudo-terminals: intact data, unplug and reconnect, errors."""
from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np
import pytest

from factoryedge.errors import BackendUnavailableError, ConfigError, SourceError
from factoryedge.runtimes import registry
from factoryedge.runtimes.sources.serial_source import SerialSource
from factoryedge.runtimes.sources.wire import encode_fe1_frame
from tests.runtimes.sources.ptys import Pty, Reader, poll

pytest.importorskip("serial", reason="pyserial is the 'device' extra")


def fe1_stream(signal: np.ndarray, seq0: int = 0, per_frame: int = 64) -> bytes:
    return b"".join(
        encode_fe1_frame(signal[k : k + per_frame], (seq0 + k // per_frame) % 2**32)
        for k in range(0, len(signal), per_frame)
    )


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def test_fe1_arrives_intact_scaled_and_timestamped(pty):
    rng = np.random.default_rng(3)
    signal = rng.integers(-32768, 32767, (64 * 300, 3), endpoint=True).astype(np.int16)
    src = SerialSource.from_uri(f"serial://{pty.path}?baud=921600&format=fe1&channels=3&scale=0.5,0.25,2")
    src.open()
    reader = Reader(src)
    pty.write_in_thread(fe1_stream(signal, seq0=2**32 - 100))
    assert poll(lambda: reader.samples() >= len(signal)), reader.samples()
    blocks = reader.stop()
    got = np.concatenate([b.samples for b in blocks])
    assert got.dtype == np.float32 and np.array_equal(got, signal * np.float32([0.5, 0.25, 2]))
    assert blocks[0].seq == 2**32 - 100 and not any(b.gap for b in blocks)
    t = [b.t_monotonic for b in blocks]
    assert t == sorted(t) and all(abs(b.t_wall - blocks[0].t_wall) < 60 for b in blocks)
    assert blocks[-1].stats["frames_ok"] == 300 and blocks[-1].stats["dropped_frames"] == 0


def test_lost_frames_start_a_block_with_a_gap(pty):
    frames = [encode_fe1_frame(np.full((8, 2), s, np.int16), s) for s in (0, 1, 2, 6, 7)]
    with SerialSource(pty.path, channels=2) as src:
        reader = Reader(src)
        pty.write(b"".join(frames))
        assert poll(lambda: reader.samples() >= 40)
        blocks = reader.stop()
    gap_blocks = [b for b in blocks if b.gap]
    assert len(gap_blocks) == 1 and gap_blocks[0].seq == 6 and gap_blocks[0].dropped == 3
    assert gap_blocks[0].samples[0, 0] == 6 and blocks[-1].stats["dropped_frames"] == 3


def test_csv_lines_through_a_pty(pty):
    src = SerialSource.from_uri(f"serial://{pty.path}?format=csv&channels=2&scale=0.1")
    src.open()
    reader = Reader(src)
    # the first line after opening is dropped: it may have been joined mid-line
    pty.write(b"# banner\r\n" + b"".join(b"%d,%d\r\n" % (k, -k) for k in range(1000)) + b"oops\r\n1000,-1000\r\n")
    assert poll(lambda: reader.samples() >= 1001)
    blocks = reader.stop()
    got = np.concatenate([b.samples for b in blocks])
    assert np.allclose(got[:, 0], np.r_[np.arange(1000), 1000] * 0.1)
    assert blocks[-1].gap and blocks[-1].stats["malformed_lines"] == 1


def test_reconnects_after_the_device_is_unplugged_and_replugged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="factoryedge.runtimes.sources.serial_source")
    link = tmp_path / "ttyVIB0"  # stands in for a udev symlink such as /dev/factoryedge-vib0
    first, second = Pty(), Pty()
    try:
        os.symlink(first.path, link)
        src = SerialSource.from_uri(f"serial://{link}?channels=1", reconnect_min=0.02, reconnect_max=0.1)
        src.open()
        reader = Reader(src)
        first.write(fe1_stream(np.arange(640, dtype=np.int16)[:, None], seq0=0))
        assert poll(lambda: reader.samples() >= 640)

        first.close()  # unplug: reads fail with EIO and the node disappears
        link.unlink()
        assert poll(lambda: src.disconnects == 1 and "reconnect attempt" in caplog.text)
        os.symlink(second.path, link)  # replug: a new device node behind the same name
        assert poll(lambda: src.reconnects == 1)
        second.write(fe1_stream(np.arange(640, 1280, dtype=np.int16)[:, None], seq0=500))
        assert poll(lambda: reader.samples() >= 1280)
        blocks = reader.stop()
    finally:
        first.close()
        second.close()
    got = np.concatenate([b.samples for b in blocks])[:, 0]
    assert np.array_equal(got, np.arange(1280))
    resumed = next(b for b in blocks if b.seq == 500)
    assert resumed.gap and resumed.stats["reconnects"] == 1 and resumed.stats["dropped_frames"] == 0
    assert sum(b.gap for b in blocks) == 1


def test_reconnects_when_a_quiet_port_is_replaced_behind_its_name(tmp_path):
    link = tmp_path / "ttyVIB0"
    first, second = Pty(), Pty()
    try:
        os.symlink(first.path, link)
        src = SerialSource(str(link), channels=1, reconnect_min=0.02, reconnect_max=0.05)
        src.open()
        reader = Reader(src)
        first.write(fe1_stream(np.arange(64, dtype=np.int16)[:, None]))
        assert poll(lambda: reader.samples() >= 64)
        link.unlink()  # the old device stays open but silent, as a stuck USB-serial adapter can
        os.symlink(second.path, link)
        assert poll(lambda: src.reconnects == 1)
        second.write(fe1_stream(np.arange(64, dtype=np.int16)[:, None], seq0=9))
        assert poll(lambda: reader.samples() >= 128)
        blocks = reader.stop()
    finally:
        first.close()
        second.close()
    assert blocks[-1].gap and blocks[-1].stats["disconnects"] == 1


def test_wait_true_waits_for_the_port_to_appear(tmp_path, caplog, pty):
    caplog.set_level(logging.INFO, logger="factoryedge.runtimes.sources.serial_source")
    link = tmp_path / "ttyLATE"
    src = SerialSource(str(link), wait=True, reconnect_min=0.01, reconnect_max=0.05)
    opener = threading.Thread(target=src.open, daemon=True)
    opener.start()
    assert poll(lambda: "opening attempt 2 failed" in caplog.text)
    os.symlink(pty.path, link)
    opener.join(timeout=5)
    assert src.is_open
    src.close()


def test_a_missing_port_names_it_and_lists_the_ports_present():
    src = SerialSource.from_uri("serial:///dev/ttyUSB97?baud=115200")
    with pytest.raises(SourceError) as err:
        src.open()
    msg = str(err.value)
    assert "'/dev/ttyUSB97' does not exist" in msg and "wait=true" in msg
    assert "ports present:" in msg or "no serial ports found (looked for /dev/ttyUSB*, /dev/ttyACM*" in msg


def test_the_wrong_channel_count_is_an_error_not_silently_reshaped(pty):
    src = SerialSource(pty.path, channels=3)
    src.open()
    reader = Reader(src)
    pty.write(encode_fe1_frame(np.zeros((4, 2), np.int16), 0))
    assert poll(lambda: not reader.thread.is_alive())
    with pytest.raises(SourceError, match="sends 2 channels but channels=3"):
        reader.stop()


def test_close_ends_an_idle_iteration_and_a_closed_source_stays_closed(pty):
    src = SerialSource(pty.path, timeout=0.02)
    src.open()
    reader = Reader(src)
    assert reader.stop() == []
    assert list(src.blocks()) == []
    with pytest.raises(SourceError, match="is closed"):
        src.open()


def test_without_pyserial_opening_names_the_extra(monkeypatch, pty):
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(BackendUnavailableError, match=r"reading a serial sensor.*pip install 'factoryedge\[device\]'"):
        SerialSource(pty.path).open()


@pytest.mark.parametrize(
    "uri, overrides, message",
    [
        ("serial:///dev/ttyUSB0?bauds=9600", {}, "unknown option 'bauds'.*valid: rate, baud, format, channels, scale"),
        ("serial:///dev/ttyUSB0?baud=fast", {}, "baud='fast' must be an integer"),
        ("serial:///dev/ttyUSB0?format=json", {}, "format='json' must be one of: fe1, csv"),
        ("serial:///dev/ttyUSB0?channels=3&scale=1,2", {}, "scale has 2 factors"),
        ("serial:///dev/ttyUSB0?scale=0", {}, "scale='0' must be a non-zero number"),
        ("serial:///dev/ttyUSB0?wait=maybe", {}, "wait='maybe' must be true or false"),
        ("serial:///dev/ttyUSB0", {"reconnect_min": 9}, "reconnect_min=9.0 exceeds reconnect_max=5.0"),
        ("serial:///dev/ttyUSB0?baud=9600&baud=115200", {}, "given twice"),
        ("serial://dev/ttyUSB0", {}, "three slashes"),
        ("serial://", {}, "names no port"),
    ],
)
def test_bad_uris_say_what_is_valid(uri, overrides, message):
    with pytest.raises(ConfigError, match=message):
        SerialSource.from_uri(uri, **overrides)


def test_registry_opens_serial_uris_with_profile_overrides():
    src = registry.open_source("serial:///dev/ttyUSB0?baud=115200", channels=3, scale=[0.001, 0.001, 0.002], wait="yes")
    assert isinstance(src, SerialSource) and not src.is_open  # nothing opened until open()/blocks()
    assert (src.baud, src.channels, src.wait, src.format) == (115200, 3, True, "fe1")
