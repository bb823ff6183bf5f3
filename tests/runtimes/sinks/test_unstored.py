"""Events the outbox could not store: sent directly when connected, each id logged, rate-limited."""
from __future__ import annotations

import json
import logging

from factoryedge.runtimes.sinks import unstored
from factoryedge.runtimes.sinks.unstored import Unstored, event_ident

LOGGER = "factoryedge.runtimes.sinks.mqtt"


def event(i: int) -> bytes:
    return json.dumps({"event_id": f"{i:032x}"}).encode()


def test_each_id_is_logged_at_warning_up_to_a_bound_then_summed_up(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(unstored.time, "monotonic", lambda: clock[0])
    connected = [True]
    sent = []
    box = Unstored(lambda *m: connected[0] and not sent.append(m))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for i in range(25):
            connected[0] = i % 5 != 0  # some while disconnected: those are lost
            assert box.handle("t/event", event(i), 1, False, OSError("database or disk is full")) == connected[0]
        clock[0] += 61
        box.handle("t/event", event(25), 1, False, OSError("database or disk is full"))
    assert (box.count, box.sent) == (26, len(sent)) and len(sent) == 21
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    for i in range(25):  # every id reaches the log
        assert any(f"event_id={i:032x}" in m for m in warnings + debug)
    assert sum("event_id=" in m for m in warnings) == 21  # 20 in the first minute, 1 in the next
    assert any("5 more events were not stored in the last minute (4 sent directly, 1 lost)" in m for m in warnings)
    assert "NOT sent either" in warnings[0] and "at most once" in warnings[1]


def test_ident_falls_back_for_payloads_without_an_id():
    assert event_ident(b'{"part_id": "A-1"}') == "part_id=A-1"
    assert event_ident(b"\xff not json") == "event_id=?"
