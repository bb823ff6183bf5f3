"""The sorting loop against real cameras (image folders through OpenCV) and scripted models."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time

import pytest

from factoryedge.errors import DataError
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.inspection.sorter import Sorter
from factoryedge.runtimes.registry import open_camera
from factoryedge.runtimes.triggers import PeriodicTrigger, TriggerSource
from tests.runtimes.inspection.helpers import FAST, BrightnessModel, RecordingSink, trigger, write_folder
from tests.support.broker import wait_until


def make(tmp_path, levels, model=None, fps=20.0, trig=None, **cfg):
    folder = write_folder(tmp_path / "shots", levels)
    config = InspectionConfig.parse({"camera": f"dir://{folder}", "trigger": "periodic://?period_ms=50",
                                     "deadline_ms": 300, "frame_max_wait_ms": 200, **cfg})
    camera = open_camera(f"dir://{folder}", fps=fps, loop=True, **FAST)
    sink = RecordingSink()
    sorter = Sorter(config, model or BrightnessModel(), sink, camera=camera, trigger=trig or TriggerSource())
    return sorter.start(), sink, folder


def test_scored_parts_get_pass_or_reject_with_evidence(tmp_path):
    sorter, sink, _ = make(tmp_path, [40, 220], archive={"dir": str(tmp_path / "rejects")})
    try:
        for i in range(6):
            sorter.handle(trigger(f"P{i}"))
        got = sink.wait_decisions(6)
    finally:
        sorter.close()
    assert [d.part_id for d in got] == [f"P{i}" for i in range(6)]
    for d in got:
        assert d.reason == "score" and d.score is not None and d.capture_epoch >= d.trigger_epoch
        assert d.verdict == ("reject" if d.frame_name == "img_001.png" else "pass")
        assert d.threshold == 0.5 and d.model_name == "bright" and d.deadline_ms == 300
        assert d.latency_ms > 0 and d.time_epoch >= d.trigger_epoch
    stats = sorter.stats()
    rejects = sum(d.verdict == "reject" for d in got)
    assert stats["triggers"] == stats["decisions"] == 6 and stats["reject"] == rejects
    assert stats["archive_written"] == rejects and not sink.closed  # the sink is its opener's to close
    archived = sorted((tmp_path / "rejects").glob("*.json"))
    assert len(archived) == rejects
    if archived:
        record = json.loads(archived[0].read_text())
        assert record["verdict"] == "reject" and any(f.endswith(".heat.png") for f in record["files"])


def test_slow_model_gets_the_fail_safe_at_the_deadline_and_no_second_verdict(tmp_path):
    model = BrightnessModel(delay=1.0)
    sorter, sink, _ = make(tmp_path, [220], model=model, deadline_ms=150, frame_max_wait_ms=100)
    try:
        t = trigger("slow-1")
        sorter.handle(t)
        [d] = sink.wait_decisions(1, timeout=3.0)
        published_at = sink.published[0][2]
        assert not model.finished.is_set(), "the decision waited for the model"
        assert (d.verdict, d.reason, d.score) == ("reject", "deadline", None)
        assert published_at - t.t_mono < 0.6  # generous: the deadline is 0.15 s, the model takes 1 s
        wait_until(lambda: sorter.stats()["late"] == 1, 5, "the late result to be counted")
    finally:
        sorter.close()
    assert len(sink.decisions()) == 1


def test_fail_safe_pass_is_configurable(tmp_path):
    sorter, sink, _ = make(tmp_path, [220], model=BrightnessModel(delay=0.5), deadline_ms=100,
                           frame_max_wait_ms=80, fail_safe="pass")
    try:
        sorter.handle(trigger("x"))
        [d] = sink.wait_decisions(1)
    finally:
        sorter.close()
    assert (d.verdict, d.reason) == ("pass", "deadline")


@pytest.mark.parametrize("error, reason", [(DataError("frame is empty"), "corrupt_frame"),
                                           (RuntimeError("CUDA out of memory"), "model_error")])
def test_model_failures_become_fail_safe_decisions(tmp_path, error, reason, caplog):
    sorter, sink, _ = make(tmp_path, [40], model=BrightnessModel(fail=error))
    try:
        sorter.handle(trigger("m1"))
        [d] = sink.wait_decisions(1)
    finally:
        sorter.close()
    assert (d.verdict, d.reason, d.score) == ("reject", reason, None)
    assert str(error) in d.detail and str(error) in caplog.text


def test_trigger_without_a_frame_is_rejected_as_no_frame(tmp_path):
    sorter, sink, _ = make(tmp_path, [40, 40, 40], fps=0.25, deadline_ms=300, frame_max_wait_ms=60)
    try:
        wait_until(lambda: sorter._latest.peek() is not None, 5, "the first frame")
        sorter.handle(trigger("ghost"))
        [d] = sink.wait_decisions(1)
    finally:
        sorter.close()
    assert (d.part_id, d.verdict, d.reason, d.capture_epoch) == ("ghost", "reject", "no_frame", None)


def test_unreadable_image_before_the_answering_frame_is_a_corrupt_frame(tmp_path):
    # img_001 is a truncated PNG: the camera skips it, so img_002 may show the next part
    sorter, sink, _ = make(tmp_path, [40, None, 50], fps=20)
    try:
        # Trigger until a part was answered by img_002 (the frame after the unreadable one).
        # A busy machine slows the camera, so a fixed number of triggers may never reach it;
        # each trigger waits for its decision, so the camera moves on between them.
        sent = 0
        while sent < 400:
            sorter.handle(trigger(f"c{sent}"))
            sent += 1
            got = sink.wait_decisions(sent, timeout=30)
            if any(d.frame_name == "img_002.png" for d in got):
                break
            time.sleep(0.03)
    finally:
        sorter.close()
    # On a loaded machine a trigger may find no frame in time: that is a fail-safe reject too.
    unanswered = [d for d in got if d.frame_name is None]
    assert all(d.verdict == "reject" and d.reason in ("no_frame", "deadline") for d in unanswered)
    by_name: dict[str, list] = {}
    for d in got:
        if d.frame_name is not None:
            by_name.setdefault(d.frame_name, []).append(d)
    assert set(by_name) <= {"img_000.png", "img_002.png"} and "img_002.png" in by_name
    assert all(d.reason == "corrupt_frame" and d.verdict == "reject" for d in by_name["img_002.png"])
    assert all(d.reason == "score" and d.verdict == "pass" for d in by_name.get("img_000.png", []))


def test_camera_that_disappears_gives_camera_lost_then_recovers(tmp_path):
    sorter, sink, folder = make(tmp_path, [40, 40], fps=20)
    try:
        sorter.handle(trigger("before"))
        shutil.rmtree(folder)
        wait_until(lambda: not sorter.camera.is_open, 5, "the camera to notice its folder is gone")
        sorter.handle(trigger("during"))
        write_folder(folder, [40, 40])
        wait_until(lambda: sorter.camera.stats["reconnects"] >= 1, 5, "the camera to reconnect")
        sorter.handle(trigger("after"))
        got = sink.wait_decisions(3)
    finally:
        sorter.close()
    # Decisions are matched to parts by id, not by arrival: "during" is decided at once on the
    # trigger thread and may overtake "before", which waits for the scoring worker.
    by_part = {d.part_id: d for d in got}
    assert {p: d.reason for p, d in by_part.items()} == {"before": "score", "during": "camera_lost", "after": "score"}
    assert by_part["during"].verdict == "reject"


def test_ended_camera_gives_camera_lost(tmp_path):
    folder = write_folder(tmp_path / "once", [40])
    config = InspectionConfig.parse({"camera": f"dir://{folder}", "deadline_ms": 200, "frame_max_wait_ms": 100})
    sink = RecordingSink()
    sorter = Sorter(config, BrightnessModel(), sink, camera=open_camera(f"dir://{folder}"), trigger=TriggerSource())
    sorter.start()
    try:
        wait_until(lambda: sorter._latest.ended, 5, "the one-image folder to end")
        sorter.handle(trigger("late"))
        [d] = sink.wait_decisions(1)
    finally:
        sorter.close()
    assert (d.verdict, d.reason) == ("reject", "camera_lost")


def test_an_ended_camera_is_logged_once_not_once_per_part(tmp_path, caplog):
    folder = write_folder(tmp_path / "once", [40])
    config = InspectionConfig.parse({"camera": f"dir://{folder}", "deadline_ms": 200, "frame_max_wait_ms": 100})
    sink = RecordingSink()
    sorter = Sorter(config, BrightnessModel(), sink, camera=open_camera(f"dir://{folder}"), trigger=TriggerSource())
    caplog.set_level(logging.INFO, logger="factoryedge")
    sorter.start()
    try:
        wait_until(lambda: sorter._latest.ended, 5, "the one-image folder to end")
        for k in range(5):
            sorter.handle(trigger(f"late-{k}"))
        got = sink.wait_decisions(5)
    finally:
        sorter.close()
    assert all(d.reason == "camera_lost" and "has ended after 1 frames" in d.detail for d in got), got
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    # the outage once, with the first part's own line; the other four parts only at DEBUG
    assert len(warnings) == 2 and sum("lost: parts are answered" in w for w in warnings) == 1, warnings
    assert sorter.stats()["reason_camera_lost"] == 5


def test_run_with_a_periodic_trigger_decides_every_part_and_closes(tmp_path):
    sorter, sink, _ = make(tmp_path, [40, 60], trig=PeriodicTrigger(period_ms=40, prefix="auto-", count=8))
    sorter.run()  # returns when the periodic source has sent its 8 triggers
    got = sink.decisions()
    assert [d.part_id for d in got] == [f"auto-{i:06d}" for i in range(8)]
    assert all(d.trigger_source == "periodic" for d in got) and not sink.closed


def test_a_trigger_that_arrives_past_its_deadline_is_answered_at_once_without_a_frame(tmp_path):
    sorter, sink, _ = make(tmp_path, [220])
    try:
        now = time.time()
        held = dataclasses.replace(trigger("held-1"), t_plc=now - 5.0)  # the broker held it 5 s
        fresh = dataclasses.replace(trigger("fresh-1"), t_plc=now)
        skewed = dataclasses.replace(trigger("skewed-1"), t_plc=now - 3600.0)  # a PLC clock an hour off
        sorter.handle(held)
        [d] = sink.wait_decisions(1)  # handle() published it before returning: no frame waited for
        assert (d.part_id, d.verdict, d.reason, d.score, d.frame_index) == ("held-1", "reject", "deadline", None, None)
        assert "after the PLC sent it" in d.detail
        sorter.handle(fresh)
        sorter.handle(skewed)
        got = {d.part_id: d for d in sink.wait_decisions(3)}
    finally:
        sorter.close()
    assert got["fresh-1"].reason == "score" and got["skewed-1"].reason == "score"  # t ignored, timed from arrival
    stats = sorter.stats()
    assert stats["late_triggers"] == 1 and stats["trigger_clock_suspect"] == 1
