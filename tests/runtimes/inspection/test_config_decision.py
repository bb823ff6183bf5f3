"""The inspection config section and the decision payload."""
from __future__ import annotations

import json
import math

import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes.inspection.config import InspectionConfig
from factoryedge.runtimes.messages import decision_payload, parse_decision, trigger_error_payload
from tests.runtimes.inspection.helpers import IDENTITY


def test_defaults_are_fail_safe():
    c = InspectionConfig.parse({"camera": "v4l2:///dev/video0"})
    assert (c.trigger, c.fail_safe, c.deadline_ms, c.archive.dir) == ("mqtt", "reject", 100.0, None)


@pytest.mark.parametrize("data, says", [
    ({}, "inspection: camera: Field required"),
    ({"camera": "usb://0"}, "inspection: camera: unknown camera scheme 'usb' in 'usb://0'; known: csi, dir, file"),
    ({"camera": "csi://0", "trigger": "kafka://x"}, "inspection: trigger: unknown trigger scheme 'kafka'"),
    ({"camera": "file://parts.mp4?fps=-1"}, "inspection.camera: unknown option 'fps' for file camera"),
    ({"camera": "dir://shots?fps=-1"}, "inspection.camera: option fps='-1' must be a number > 0"),
    ({"camera": "dir://shots", "camera_options": {"fps": 0}}, "inspection.camera_options.fps: option fps=0"),
    ({"camera": "csi://0", "trigger": "periodic://?period_ms=0"},
     "inspection.trigger: option period_ms='0' must be a number > 0"),
    ({"camera": "csi://0", "deadline_ms": -5}, "inspection: deadline_ms: Input should be greater than 0 (got -5)"),
    ({"camera": "csi://0", "fail_safe": "maybe"}, "fail_safe: Input should be 'reject' or 'pass' (got 'maybe')"),
    ({"camera": "csi://0", "deadline_ms": 50, "frame_max_wait_ms": 80}, "frame_max_wait_ms=80 must be below deadline_ms=50"),
    ({"camera": "csi://0", "archive": {"max_items": 0}},
     "inspection: archive.max_items: Input should be greater than or equal to 1"),
    ({"camera": "csi://0", "deadline": 50}, "inspection: deadline: Extra inputs are not permitted"),
])
def test_config_errors_name_the_key_and_what_is_valid(data, says):
    with pytest.raises(ConfigError) as e:
        InspectionConfig.parse(data)
    assert says in str(e.value)


def _decision(**kw):
    fields = dict(part_id="A-1", verdict="reject", reason="score", score=0.9, threshold=0.5, trigger_source="mqtt",
                  trigger_epoch=1_700_000_000.0, capture_epoch=1_700_000_000.01, latency_ms=12.5, deadline_ms=100,
                  model_name="m", model_version="1", frame_index=3, frame_pos=-1, now=1_700_000_000.02)
    return decision_payload(IDENTITY, **{**fields, **kw})


def test_decision_round_trips_and_carries_both_time_forms():
    d = _decision()
    obj = json.loads(d.to_bytes())
    assert obj["schema"] == "factoryedge.decision/1" and obj["trigger_utc"] == "2023-11-14T22:13:20.000Z"
    assert obj["capture_utc"] == "2023-11-14T22:13:20.010Z" and obj["frame_pos"] is None
    assert obj["device_id"] == "dev1" and obj["machine"] == "sorter1"
    back = parse_decision(d.to_bytes()[:-1] + b',"added_later":1}')
    assert back == d


def test_unscored_decision_has_null_score():
    obj = json.loads(_decision(reason="no_frame", score=None, capture_epoch=None).to_bytes())
    assert obj["score"] is None and obj["capture_utc"] is None and obj["reason"] == "no_frame"


@pytest.mark.parametrize("kw, says", [({"verdict": "maybe"}, "verdict"), ({"reason": "bored"}, "reason"),
                                      ({"score": math.nan}, "score"), ({"part_id": ""}, "part_id")])
def test_invalid_decisions_are_refused(kw, says):
    with pytest.raises(ConfigError, match=says):
        _decision(**kw)


def test_trigger_error_payload_quotes_the_bad_bytes():
    obj = json.loads(trigger_error_payload(IDENTITY, source="mqtt trigger", error="bad", raw=b"\xff{x").to_bytes())
    assert obj["schema"] == "factoryedge.trigger_error/1" and obj["payload_excerpt"] == "\ufffd{x"
