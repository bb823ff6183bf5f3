"""SerialSource reports a troubled link: a rate-limited WARNING summarising the decoder's
counters, logged from the read loop, so even bytes that never make a frame are reported."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from factoryedge.runtimes.sources.serial_source import SerialSource
from factoryedge.runtimes.sources.wire import encode_fe1_frame
from tests.runtimes.sources.ptys import Pty, Reader, poll

pytest.importorskip("serial", reason="pyserial is the 'device' extra")
LOGGER = "factoryedge.runtimes.sources.serial_source"


def half_corrupted(n: int, channels: int = 2, seq0: int = 0) -> bytes:
    """n fe1 frames, every second one with a flipped payload byte (its CRC fails)."""
    out = []
    for k in range(n):
        frame = bytearray(encode_fe1_frame(np.full((32, channels), k, np.int16), seq0 + k))
        if k % 2:
            frame[20] ^= 0xFF
        out.append(bytes(frame))
    return b"".join(out)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


@pytest.fixture
def fast_warnings(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(SerialSource, "WARN_INTERVAL_S", 0.3)


def test_crc_errors_are_warned_with_a_summary(pty, fast_warnings, caplog):
    with SerialSource(pty.path, channels=2) as src:
        reader = Reader(src)
        pty.write(half_corrupted(400))
        assert poll(lambda: src.stats["crc_errors"] >= 200, 10), src.stats
        assert poll(lambda: any("CRC errors" in w for w in warnings_of(caplog)), 10), caplog.text
        reader.stop()
    stats = src.stats
    assert stats["crc_errors"] == 200 and stats["frames_ok"] == 200 and stats["dropped_frames"] == 199
    text = " | ".join(warnings_of(caplog))
    assert f"serial {pty.path}: " in text and "resyncs" in text and "dropped frames" in text
    # the warnings add up to the counters: each summarises the increase since the one before
    crc = [int(w.split(" CRC errors")[0].rsplit(" ", 1)[-1]) for w in warnings_of(caplog)]
    assert sum(crc) == 200


def test_random_bytes_without_a_single_frame_are_warned(pty, fast_warnings, caplog):
    garbage = np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    with SerialSource(pty.path, channels=2) as src:
        reader = Reader(src)
        pty.write_in_thread(garbage)
        assert poll(lambda: any("bytes discarded" in w for w in warnings_of(caplog)), 15), caplog.text
        assert poll(lambda: src.stats["bytes_in"] == len(garbage), 15), src.stats
        blocks = reader.stop()
    assert blocks == [] and src.stats["frames_ok"] == 0 and src.stats["bytes_discarded"] > 0
    assert "resyncs" in warnings_of(caplog)[0]


def test_warnings_are_rate_limited(pty, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    monkeypatch.setattr(SerialSource, "WARN_INTERVAL_S", 3600.0)
    with SerialSource(pty.path, channels=2) as src:
        reader = Reader(src)
        pty.write(half_corrupted(20, seq0=0))
        assert poll(lambda: src.stats["crc_errors"] >= 10, 10), src.stats
        # as if the first interval after opening had passed, with trouble to report: set only
        # now, or a read that times out before the first bytes arrive would use up the check
        src._warn_due = 0.0
        assert poll(lambda: len(warnings_of(caplog)) == 1, 10), caplog.text
        for k in range(1, 5):
            pty.write(half_corrupted(20, seq0=20 * k))
            assert poll(lambda k=k: src.stats["crc_errors"] >= 10 * (k + 1), 10), src.stats
        reader.stop()
    assert len(warnings_of(caplog)) == 1, warnings_of(caplog)


def test_a_clean_stream_joined_mid_frame_is_not_warned(pty, fast_warnings, caplog):
    frames = [encode_fe1_frame(np.full((32, 2), k, np.int16), k) for k in range(200)]
    with SerialSource(pty.path, channels=2) as src:
        reader = Reader(src)
        pty.write(frames[0][9:] + b"".join(frames[1:100]))  # the host joins in the middle of frame 0
        assert poll(lambda: src.stats["frames_ok"] >= 99, 10), src.stats
        pty.write(b"".join(frames[100:]))
        assert poll(lambda: src.stats["frames_ok"] >= 199, 10), src.stats
        # several warning intervals pass with reads going on: still nothing to warn about
        pty.write(b"".join(encode_fe1_frame(np.zeros((32, 2), np.int16), 200 + k) for k in range(50)))
        assert poll(lambda: src.stats["frames_ok"] >= 249, 10), src.stats
        assert poll(lambda: src._warn_due > src._warned_at + 0.3 + 0.6, 10)  # two checks have run
        reader.stop()
    assert src.stats["resyncs"] == 1 and src.stats["bytes_discarded"] > 0
    assert warnings_of(caplog) == [], warnings_of(caplog)
