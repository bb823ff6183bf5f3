"""``factoryedge simulate-sensor`` as a periodic-snapshot sensor: a real subprocess on a real pty."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from factoryedge.runtimes.sources.serial_source import SerialSource
from tests.cli.test_cli import assert_one_line_error, cli
from tests.runtimes.sources.ptys import Reader, poll


def test_a_burst_flag_without_bursts_is_a_one_line_error(tmp_path):
    assert_one_line_error(cli("simulate-sensor", "--duration", "1", "--burst-flag", "--link", tmp_path / "vib0"),
                          "burst_flag marks the first frame of each burst; give burst")
    assert not (tmp_path / "vib0").exists()  # the pty it made is closed and its link removed


def test_periodic_bursts_read_through_the_uri_it_prints(tmp_path):
    pytest.importorskip("serial", reason="pyserial is the 'device' extra")
    link = tmp_path / "vib0"
    # 0.1 s bursts (1200 samples at 12 kHz: 4 frames of 256 and one of 176) every 0.25 s, played 5x faster
    cmd = [sys.executable, "-m", "factoryedge", "simulate-sensor", "--duration", "2", "--burst", "1200",
           "--period", "0.25", "--timestamps", "--burst-flag", "--speed", "5", "--loop", "--link", str(link)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert "bursts of 1200 samples every 0.25 s" in first, first
        uri = proc.stdout.readline().strip().removeprefix("read it with: ")
        assert uri == f"serial://{link}?rate=12000&format=fe1&channels=1&scale=0.00048828125", uri
        src = SerialSource.from_uri(uri)
        src.open()
        reader = Reader(src)
        assert poll(lambda: sum(b.gap for b in list(reader.blocks)) >= 4, timeout=30), reader.blocks
        blocks = reader.stop()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "bursts, " in err and "Traceback" not in err
    # frames are numbered on across bursts, 5 per burst: each burst's first one starts a block
    # (a block after frames lost on a stalled machine would start anywhere, so those are left out)
    starts = [b.seq for b in blocks if b.gap and not b.dropped]
    assert len(starts) >= 3 and all(s % 5 == 0 for s in starts), [(b.seq, b.dropped, b.n) for b in blocks]
    assert blocks[-1].stats["bursts"] >= 3
