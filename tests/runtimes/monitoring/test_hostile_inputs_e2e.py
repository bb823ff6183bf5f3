"""The condition monitor against a hostile plant network and a garbage-spewing sensor line,
end to end: a real Mosquitto, commands from mosquitto_pub in another process, a subscriber
in another process, and the real serial source on a real pty.

Every malformed command is answered with a reason and never run, the device keeps running
and counts the refusals in its health; a corrupted or pure-garbage serial stream is logged
as a WARNING and its decoder counters appear in a health message."""
from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from factoryedge.runtimes.messages import Topics
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from factoryedge.runtimes.sources.serial_source import SerialSource
from factoryedge.runtimes.sources.wire import encode_fe1_frame
from tests.runtimes.sources.ptys import Pty
from tests.support.broker import require_binary, wait_until
from tests.support.monitoring import SCALE, write_profile
from tests.support.sim_model import SAMPLE_RATE

pytest.importorskip("serial", reason="pyserial is the 'device' extra")
HEALTH = "factoryedge/v1/+/+/+/health"
RESPONSES = "factoryedge/v1/+/+/+/command/response"
SERIAL_LOGGER = "factoryedge.runtimes.sources.serial_source"


@contextmanager
def running_device(tmp_path, broker, sim_bundle):
    """A running ConditionMonitor reading a pty with nothing on it yet: (monitor, pty)."""
    pty = Pty()
    uri = f"serial://{pty.path}?rate={SAMPLE_RATE:g}&format=fe1&channels=1&scale={SCALE!r}"
    monitor = ConditionMonitor(load_profile(write_profile(tmp_path, sim_bundle, uri, broker)))
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.source.is_open, 20, "the serial source to open the pty")
        assert monitor.sink.wait_connected(20)
        yield monitor, pty
    finally:
        monitor.stop()
        runner.join(timeout=30)
        pty.close()
    assert not runner.is_alive() and monitor.failed is None


@pytest.fixture
def device(tmp_path, broker, sim_bundle):
    with running_device(tmp_path, broker, sim_bundle) as d:
        yield d


def send(broker, tmp_path, topic: str, payload: bytes) -> None:
    """Publish from a separate process, as a plant's client would (from a file: any size)."""
    path = tmp_path / "command.bin"
    path.write_bytes(payload)
    subprocess.run([require_binary("mosquitto_pub"), "-h", broker.host, "-p", str(broker.port), "-q", "1",
                    "-t", topic, "-f", str(path)], check=True, timeout=30)


def answers(sub) -> list[dict]:
    return [m.json() for m in sub.messages() if m.topic.endswith("/command/response")]


def healths(sub) -> list[dict]:
    return [m.json() for m in sub.messages() if m.topic.endswith("/health")]


def test_hostile_commands_are_answered_never_run_and_counted(tmp_path, broker, subscribe, device, caplog):
    monitor, _ = device
    sub = subscribe([RESPONSES, HEALTH])
    topic = Topics.for_identity(monitor.identity).command
    threshold = monitor.debounce.threshold
    # The sink subscribes to its command topic asynchronously after connecting: re-send a
    # harmless command (same request_id, so it runs once) until its answer arrives.
    probe = json.dumps({"command": "set_threshold", "args": {"threshold": threshold}, "request_id": "probe"})

    deadline = time.monotonic() + 30
    while not any(a["request_id"] == "probe" for a in answers(sub)):
        assert time.monotonic() < deadline, "no answer to a first command within 30 s"
        send(broker, tmp_path, topic, probe.encode())
        wait_for_answer = time.monotonic() + 1.0
        while time.monotonic() < wait_for_answer and not any(a["request_id"] == "probe" for a in answers(sub)):
            time.sleep(0.02)
    hostile = {
        "deep-100k": b"[" * 100_000,
        "deep": b'{"request_id": "deep", "command": "set_threshold", "args": {"threshold": 9, "x": '
                + b"[" * 50_000 + b"}}",
        "oversize": b'{"command": "set_threshold", "args": {"threshold": 9}, "request_id": "oversize", "pad": "'
                    + b"x" * 70_000 + b'"}',
        "invalid-json": b'{"command": "set_threshold", "args": {"threshold": 9}',
        "unknown": b'{"command": "self_destruct", "request_id": "unknown"}',
    }
    for payload in hostile.values():
        send(broker, tmp_path, topic, payload)
    send(broker, tmp_path, topic, b'{"command": "set_threshold", "args": {"threshold": 7.5}, "request_id": "after"}')
    def real_answers() -> list[dict]:
        return [a for a in answers(sub) if a["request_id"] != "probe"]

    got = sub.wait_for(lambda m: len(real_answers()) >= 6, 30, "an answer to every command")
    by_id = {}
    for a in real_answers():
        by_id.setdefault(a["request_id"], []).append(a)
    unnamed = by_id.pop(None)
    assert sorted(a["message"].split(" ")[0] for a in unnamed) == ["command", "command"]
    assert any("at most 65536 bytes" in a["message"] for a in unnamed)  # 100,000 '[' carry no id
    assert any("not valid UTF-8 JSON" in a["message"] for a in unnamed)
    assert "nested deeper than 32 levels" in by_id["deep"][0]["message"]
    assert "at most 65536 bytes" in by_id["oversize"][0]["message"]
    assert "unknown command 'self_destruct'" in by_id["unknown"][0]["message"]
    for a in [*unnamed, by_id["deep"][0], by_id["oversize"][0], by_id["unknown"][0]]:
        assert a["status"] == "rejected" and a["schema"] == "factoryedge.command_response/1", a
    # nothing hostile ran (no threshold 9); the device keeps running and obeys the next command
    assert by_id["after"][0]["status"] == "ok" and monitor.debounce.threshold == 7.5
    assert monitor.sink.stats().commands_refused == 5
    sub.wait_for(lambda m: any(h["commands_refused"] == 5 for h in healths(sub)), 30,
                 "a health message counting the 5 refused commands")
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text
    assert len(real_answers()) == 6 and got


def half_corrupted_stream(n: int) -> bytes:
    rng = np.random.default_rng(11)
    out = []
    for k in range(n):
        frame = bytearray(encode_fe1_frame(rng.integers(-300, 300, (256, 1)).astype(np.int16), k))
        if k % 2:
            frame[30] ^= 0x5A
        out.append(bytes(frame))
    return b"".join(out)


@pytest.mark.parametrize("stream, counter, words", [
    (half_corrupted_stream(600), "crc_errors", ("CRC errors", "resyncs")),
    (np.random.default_rng(5).integers(0, 256, 400_000, dtype=np.uint8).tobytes(), "bytes_discarded",
     ("bytes discarded", "resyncs")),
], ids=["half-the-frames-bad-crc", "random-bytes"])
def test_serial_garbage_is_warned_and_its_counters_are_in_health(tmp_path, broker, subscribe, monkeypatch,
                                                                 caplog, sim_bundle, stream, counter, words):
    caplog.set_level(logging.INFO, logger=SERIAL_LOGGER)
    monkeypatch.setattr(SerialSource, "WARN_INTERVAL_S", 0.5)
    sub = subscribe([HEALTH])
    with running_device(tmp_path, broker, sim_bundle) as (monitor, pty):
        pty.write_in_thread(stream)
        wait_until(lambda: monitor.source.stats["bytes_in"] == len(stream), 30, "the whole stream read")
        warned = wait_until(lambda: [r.getMessage() for r in caplog.records
                                     if r.name == SERIAL_LOGGER and r.levelno == logging.WARNING], 30,
                            "a WARNING about the serial stream")
        sub.wait_for(lambda m: any((h.get("source_stats") or {}).get(counter, 0) > 0 for h in healths(sub)), 30,
                     f"a health message with source_stats.{counter} > 0")
    assert f"serial {pty.path}: " in warned[0] and all(w in " ".join(warned) for w in words), warned
    last = [h for h in healths(sub) if h.get("source_stats")][-1]["source_stats"]
    assert {"crc_errors", "resyncs", "malformed_lines", "dropped_frames", "bytes_discarded"} <= set(last)
