"""The camera stream ends or vanishes while an inspection station runs and the PLC keeps triggering.

The station is a real ``factoryedge run`` process reading a real video file through OpenCV,
scoring with a real image bundle on ONNX Runtime; the PLC (``devkit.plc``) and the plant's
subscriber are processes of their own, all on a real Mosquitto. Decisions are this test's
events: every trigger must get exactly one, and a part the station cannot see is rejected
with reason ``camera_lost`` (the fail-safe verdict), never left unanswered.

- A file without ``loop`` ends for good (``cameras.video_file``): the station keeps running,
  answers every later part ``camera_lost``, logs the loss once and says ``ended`` in health.
- A looping file that vanishes is reopened with backoff until it is back (what
  ``cameras.base`` promises for files and folders; a live camera does the same on a stall):
  parts meanwhile get ``camera_lost``, health says ``reconnecting``, and once the file is back
  the station scores again by itself.

The monitoring program reads vibration sources, not cameras: it has no equivalent here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from factoryedge.runtimes.devkit.plc import Plan, Report
from tests.runtimes.inspection.helpers import parts_video
from tests.support.broker import wait_until
from tests.support.image_bundle import make_image_bundle

BASE = "factoryedge/v1/s1/l1/cam-end"
DECISION, HEALTH = f"{BASE}/decision", f"{BASE}/health"
FRAMES_PER_PART = 3
DEFECTIVE = {1, 4}
LOST_LINE = "lost: parts are answered"  # the sorter's one line per outage
BACK_LINE = "were answered camera_lost while it was lost"  # and its one line when it is back


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_image_bundle(tmp_path_factory.mktemp("camera_end") / "bundle")


class Station:
    """``factoryedge run`` on an inspection profile, its log in a file the test can read while it runs."""

    def __init__(self, tmp_path: Path, bundle, camera: str, broker) -> None:
        self.profile = tmp_path / "station.yaml"
        self.profile.write_text(yaml.safe_dump({
            "kind": "inspection",
            "identity": {"site": "s1", "line": "l1", "machine": "cam-end", "device_id": "d1"},
            # generous times: on a busy 2-core machine a scored part must not turn into a deadline
            "inspection": {"camera": camera, "trigger": "mqtt", "deadline_ms": 1500, "frame_max_wait_ms": 800},
            "model": {"bundle": str(bundle.path), "backend": "onnxruntime"},
            "mqtt": {"uri": broker.url, "outbox": str(tmp_path / "outbox.sqlite"), "health_interval_s": 0.5,
                     "options": {"reconnect_min": 0.05, "reconnect_max": 0.5}},
        }))
        self.log_path = tmp_path / "station.log"
        self.broker = broker
        self.tmp_path = tmp_path
        self.plc_runs = 0
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "factoryedge", "run", str(self.profile)],
                                         stdout=subprocess.DEVNULL, stderr=log,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"the station exited with {self.proc.returncode}:\n{self.log()[-3000:]}", pytrace=False)
        return True

    def wait_listening(self) -> None:
        """Until the trigger subscription is acknowledged: a trigger sent before it would reach nobody."""
        wait_until(lambda: self.alive() and "mqtt trigger listening" in self.log(), 60,
                   "the station to subscribe to its triggers")

    def plc(self, parts: int, period: float) -> Report:
        """Run the PLC simulator for ``parts`` triggers (its own prefix per run) and return what it heard."""
        self.plc_runs += 1
        report = self.tmp_path / f"plc-{self.plc_runs}.json"
        plan = Plan(self.broker.url, BASE, parts=parts, period=period, prefix=f"run{self.plc_runs}-", digits=3,
                    wait=60, report=report, quiet=True)
        done = subprocess.run(plan.command(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return Report.read(report)

    def stop(self) -> tuple[int, str]:
        """SIGTERM, as systemd stops it; (exit status, log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"the station hung on SIGTERM:\n{self.log()[-3000:]}", pytrace=False)
        return self.proc.returncode, self.log()


def last_health(sub) -> dict:
    return json.loads(sub.messages(HEALTH)[-1].payload)


def wait_state(sub, state: str, what: str) -> dict:
    """Until a health report says the camera is ``state``; that report."""
    sub.wait_for(lambda m: m and json.loads(m[-1].payload)["extra"]["camera"]["state"] == state, 60, what,
                 topic=HEALTH)
    return last_health(sub)


def report(name: str, reports: list[Report], sub) -> tuple[int, int, int]:
    """Print ``NAME: produced N / delivered N / duplicated N`` with triggers as produced, decisions as delivered."""
    sent = sum(r.sent for r in reports)
    delivered = sum(len(r.decisions) for r in reports)
    copies = [m.json()["part_id"] for m in sub.messages(DECISION)]
    duplicated = len(copies) - len(set(copies))
    reasons: dict[str, int] = {}
    for r in reports:
        for d in r.decisions:
            reasons[d.payload["reason"]] = reasons.get(d.payload["reason"], 0) + 1
    print(f"\n{name}: produced {sent} / delivered {delivered} / duplicated {duplicated} "
          f"(triggers sent / decisions at the PLC; reasons {dict(sorted(reasons.items()))})")
    return sent, delivered, duplicated


def check_scored(decisions: list[dict]) -> None:
    """A scored decision judged the part its frame shows (the video's parts are known)."""
    for d in decisions:
        shows = d["frame_pos"] // FRAMES_PER_PART
        assert d["verdict"] == ("reject" if shows in DEFECTIVE else "pass"), d


def check_camera_lost(decisions: list[dict], detail: str) -> None:
    for d in decisions:
        assert (d["verdict"], d["reason"], d["score"], d["frame_index"]) == ("reject", "camera_lost", None, None), d
        assert detail in d["detail"], d


def test_a_video_that_ends_mid_run_gets_every_later_trigger_a_camera_lost_reject(tmp_path, broker, subscribe, bundle):
    # 12 parts of 3 frames at 10 fps: the file plays 3.6 s in real time, then ends (no loop)
    video = parts_video(tmp_path / "parts.avi", 12, DEFECTIVE, FRAMES_PER_PART, fps=10.0)
    sub = subscribe([DECISION, HEALTH])
    station = Station(tmp_path, bundle, f"file://{video}?realtime=true", broker)
    try:
        station.wait_listening()
        # while the video plays (or already after its end, on a slow machine: the test holds either way)
        during = station.plc(parts=6, period=0.05)
        health = wait_state(sub, "ended", "health to say the camera has ended")
        assert health["extra"]["camera"]["frames"] >= 1
        station.alive()  # the end of the stream did not end the station
        after = station.plc(parts=20, period=0.02)  # the PLC keeps triggering
        wait_until(lambda: last_health(sub)["extra"]["sorter"]["decisions"] >= 26, 30,
                   "a health report counting every decision")
        health = last_health(sub)
    finally:
        rc, log = station.stop()
    sent, delivered, duplicated = report("camera end (file, no loop)", [during, after], sub)
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # a PLC is never left without an answer, and never gets two
    assert during.missing == [] and after.missing == [], (during.missing, after.missing)
    assert sent == delivered == 26 and duplicated == 0 and during.duplicates == after.duplicates == 0
    # before the end the parts are scored; once a part found the camera ended, no later part is scored
    first = [d.payload for d in during.decisions]
    reasons = [d["reason"] for d in first]
    assert set(reasons) <= {"score", "camera_lost"}, reasons
    assert reasons == sorted(reasons, key=lambda r: r == "camera_lost"), reasons
    check_scored([d for d in first if d["reason"] == "score"])
    check_camera_lost([d for d in first if d["reason"] == "camera_lost"], "has ended after")
    check_camera_lost([d.payload for d in after.decisions], "has ended after")
    lost = sum(r == "camera_lost" for r in reasons) + len(after.decisions)
    sorter = health["extra"]["sorter"]
    assert sorter["reason_camera_lost"] == lost and sorter["triggers"] == 26
    assert health["extra"]["camera"]["state"] == "ended"
    # the loss is logged once, not once per part (26 parts, at most 26 lost)
    assert log.count(LOST_LINE) == 1, [line for line in log.splitlines() if "camera" in line][-10:]
    assert log.count("end after") == 1  # the camera's own line: the file ended


def test_a_looping_video_that_vanishes_gets_camera_lost_until_it_is_back_then_scores_again(
        tmp_path, broker, subscribe, bundle):
    video = tmp_path / "parts.avi"
    parts_video(tmp_path / "spare.avi", 6, DEFECTIVE, FRAMES_PER_PART, fps=30.0)
    os.link(tmp_path / "spare.avi", video)  # the camera's file, put back later from the spare
    sub = subscribe([DECISION, HEALTH])
    station = Station(tmp_path, bundle, f"file://{video}?realtime=true&loop=true&reconnect_min=0.05"
                                        f"&reconnect_max=0.2", broker)
    try:
        station.wait_listening()
        before = station.plc(parts=8, period=0.05)
        video.unlink()  # noticed at the end of the pass the camera is playing (< 0.6 s)
        wait_state(sub, "reconnecting", "health to say the camera is reconnecting")
        away = station.plc(parts=10, period=0.02)
        os.link(tmp_path / "spare.avi", video)
        health = wait_state(sub, "streaming", "health to say the camera streams again")
        assert health["extra"]["camera"]["reconnects"] >= 1
        back = station.plc(parts=8, period=0.05)
    finally:
        rc, log = station.stop()
    sent, delivered, duplicated = report("camera vanishes and returns (file, loop)", [before, away, back], sub)
    assert rc == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert before.missing == away.missing == back.missing == []
    assert sent == delivered == 26 and duplicated == 0
    for run in (before, back):
        assert [d.payload["reason"] for d in run.decisions] == ["score"] * len(run.decisions), run.decisions
        check_scored([d.payload for d in run.decisions])
    check_camera_lost([d.payload for d in away.decisions], "reconnecting")
    # one line when the parts start going unseen, one when the camera delivers again; not one per part
    assert log.count(LOST_LINE) == 1 and log.count(BACK_LINE) == 1, \
        [line for line in log.splitlines() if "camera" in line][-12:]
    assert "10 part(s) were answered camera_lost" in log
