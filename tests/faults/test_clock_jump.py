"""The wall clock set back an hour mid-run (NTP stepping it, an operator fixing it).

The condition monitor runs in a thread on a replayed recording that raises and clears
anomalies; the test swaps ``factoryedge.runtimes.clock.CLOCK`` for one whose wall clock it
can jump (the process cannot change the system clock, and must not). After the jump the
events' ``time_epoch`` goes back an hour, but the device's own ``seq`` keeps their order,
``time_mono`` keeps rising, the debounce's raise/clear sequence stays consistent, health
uptime does not go negative, and nothing is lost or duplicated beyond at-least-once.
"""
from __future__ import annotations

import threading
import time

from factoryedge.runtimes import clock
from factoryedge.runtimes.monitoring.program import ConditionMonitor
from factoryedge.runtimes.profile import load_profile
from tests.faults.report import report
from tests.support.broker import wait_until
from tests.support.monitoring import ANOMALIES, alternating_recording, anomaly_events, outbox_event_ids, write_profile

HEALTH = "factoryedge/v1/+/+/+/health"
JUMP_S = -3600.0


class JumpingClock(clock.SystemClock):
    """The system's clocks, but the wall clock is offset by ``offset`` seconds, set at will."""

    def __init__(self) -> None:
        self.offset = 0.0

    def wall(self) -> float:
        return time.time() + self.offset


def test_wall_clock_set_back_an_hour_keeps_event_order_by_sequence(tmp_path, broker, subscribe, sim_bundle,
                                                                     monkeypatch):
    sub = subscribe([ANOMALIES, HEALTH])
    jumping = JumpingClock()
    monkeypatch.setattr(clock, "CLOCK", jumping)
    replay = alternating_recording(tmp_path, cycles=8)
    profile = load_profile(write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker,
                                         clear_windows=5))
    monitor = ConditionMonitor(profile)
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.counters.events >= 1, 30, "a first anomaly event")
        jumping.offset = JUMP_S
        events_before_jump = monitor.counters.events
    finally:
        runner.join(timeout=120)  # the replay ends; run() flushes the outbox
    assert not runner.is_alive()
    stored = outbox_event_ids(tmp_path / "outbox.sqlite")
    wait_until(lambda: {e["event_id"] for e in anomaly_events(sub)} >= set(stored), 15, "every stored event")
    received = anomaly_events(sub)
    report("wall clock set back 1 h mid-run", stored, [e["event_id"] for e in received],
           f"{len(stored) - events_before_jump} made after the jump")

    assert len(stored) == len(set(stored)) == monitor.counters.events
    assert {e["event_id"] for e in received} == set(stored)
    events = sorted({e["event_id"]: e for e in received}.values(), key=lambda e: e["seq"])
    # the device's own order: one run, seq 1..N without a hole, the monotonic clock rising along it
    assert {e["run_id"] for e in events} == {monitor.run_id}
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    monos = [e["time_mono"] for e in events]
    assert monos == sorted(monos) and len(set(monos)) == len(monos)
    # the jump happened between two events: the wall clock says the later one came an hour earlier
    after = [e for e in events if e["seq"] > events_before_jump]
    assert len(after) >= 2, "the replay ended too soon after the jump; lengthen the recording"
    before = [e for e in events if e["seq"] <= events_before_jump]
    assert after[0]["time_epoch"] < before[-1]["time_epoch"] - 3000
    assert after[0]["window_end_epoch"] < before[-1]["window_end_epoch"] - 3000
    # read by seq, the state changes make sense: raised, (escalated)*, cleared, raised, ...
    active = False
    for e in events:
        assert (e["state"] == "raised") == (not active), [(x["seq"], x["state"]) for x in events]
        active = e["state"] != "cleared"
    # health kept flowing across the jump with a sane, rising uptime (a duration, on the monotonic clock)
    health = [m.json() for m in sub.messages() if m.topic.endswith("/health")]
    jumped = [h for h in health if h["time_epoch"] < before[-1]["time_epoch"] - 3000]
    assert jumped, "no health report after the jump"
    uptimes = [h["uptime_s"] for h in health]
    assert uptimes == sorted(uptimes) and uptimes[0] >= 0
    # lag (now against the last scored window) on the monotonic clock: never an hour, never negative
    lags = [h["lag_s"] for h in jumped if h["lag_s"] is not None]
    assert lags and all(0 <= lag < 600 for lag in lags), lags
