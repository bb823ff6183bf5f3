"""Payload schemas, the topic scheme, and command parsing (mqtt.md is checked by test_messages_doc)."""
from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factoryedge.debounce import Debounce, DebounceConfig
from factoryedge.errors import ConfigError
from factoryedge.runtimes import messages as msg
from tests.runtimes.sinks.conftest import IDENTITY, TOPICS
from tests.support.fuzz import examples

COMMON = {"schema", "device_id", "site", "line", "machine", "time_utc", "time_epoch"}


def _anomaly(**kw):
    args = dict(severity="alarm", score=7.5, threshold=2.5, window_start=1_700_000_000.0,
                window_end=1_700_000_001.5, model_name="pump", model_version="1.2.0", peak_score=9.0,
                n_windows=3, details={"top": ["rms"]})
    return msg.anomaly_payload(IDENTITY, **{**args, **kw})


def test_topic_scheme():
    assert TOPICS.base == "factoryedge/v1/plant1/press3/m7"
    assert TOPICS.anomaly == "factoryedge/v1/plant1/press3/m7/event/anomaly"
    assert TOPICS.telemetry == "factoryedge/v1/plant1/press3/m7/telemetry/score"
    assert TOPICS.health.endswith("/m7/health") and TOPICS.status.endswith("/m7/status")
    assert TOPICS.command.endswith("/m7/command")
    assert TOPICS.command_response.endswith("/m7/command/response")
    assert msg.Topics.for_identity(IDENTITY, "acme/edge").base == "acme/edge/v1/plant1/press3/m7"


@pytest.mark.parametrize("bad", ["", "line 3", "a/b", "+", "#", "x" * 65, "-lead", "Süd"])
def test_identity_rejects_unsafe_topic_segments(bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        msg.Identity(site=bad, line="l", machine="m", device_id="d")


def test_anomaly_payload_has_the_documented_fields():
    event = _anomaly()
    body = json.loads(event.to_bytes())
    assert body["schema"] == "factoryedge.anomaly/1"
    assert set(body) == COMMON | {
        "event_id", "state", "severity", "score", "peak_score", "threshold", "window_start_utc",
        "window_end_utc", "window_start_epoch", "window_end_epoch", "n_windows", "model_name",
        "model_version", "details", "seq", "run_id", "time_mono"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["event_id"])
    assert body["machine"] == "m7" and body["device_id"] == "edge-test"
    assert body["window_start_utc"] == "2023-11-14T22:13:20.000Z"
    assert body["window_end_utc"] == "2023-11-14T22:13:21.500Z"
    parsed = dt.datetime.fromisoformat(body["time_utc"].replace("Z", "+00:00"))
    assert abs(parsed.timestamp() - body["time_epoch"]) < 1e-3
    assert body["details"] == {"top": ["rms"]}
    assert _anomaly().event_id != event.event_id


def test_parse_payload_round_trips_and_ignores_unknown_fields():
    event = _anomaly()
    assert msg.parse_payload(event.to_bytes()) == event
    newer = json.loads(event.to_bytes()) | {"added_in_a_later_minor": 1}
    assert msg.parse_payload(json.dumps(newer)) == event
    with pytest.raises(ConfigError, match="factoryedge.anomaly/2"):
        msg.parse_payload(json.dumps(newer | {"schema": "factoryedge.anomaly/2"}))


@pytest.mark.parametrize("kw, match", [
    ({"severity": "bad"}, "severity"),
    ({"score": float("nan")}, "score"),
    ({"threshold": 0.0}, "threshold"),
    ({"window_end": 1.0}, "window_end"),
    ({"event_id": "not-hex"}, "event_id"),
])
def test_anomaly_payload_rejects_invalid_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        _anomaly(**kw)


def test_anomaly_from_a_scorer_event_keeps_its_event_id():
    scorer = Debounce(1.0, config=DebounceConfig(k=2, n=3))
    scores = np.array([0.1, 3.0, 3.0, 3.0])
    events = scorer.update(scores, np.arange(4.0), np.arange(4.0) + 1)
    assert events and events[0].kind == "raised"
    payload = msg.anomaly_from_event(IDENTITY, events[0], "pump", "1")
    assert payload.event_id == events[0].event_id
    assert payload.state == "raised" and payload.severity == events[0].severity


def test_telemetry_summarises_scores():
    t = msg.telemetry_payload(IDENTITY, [1.0, 3.0, 2.0, float("nan")], threshold=2.0, period_start=0.0,
                             period_end=10.0, model_name="pump", model_version="1", anomaly_state="warning")
    body = json.loads(t.to_bytes())
    assert body["schema"] == "factoryedge.telemetry/1"
    assert (body["n_windows"], body["score_min"], body["score_max"], body["score_last"]) == (4, 1.0, 3.0, 2.0)
    assert body["score_mean"] == pytest.approx(2.0) and body["n_over_threshold"] == 2
    empty = msg.telemetry_payload(IDENTITY, [], threshold=2.0, period_start=0.0, period_end=10.0,
                                 model_name="pump", model_version="1")
    assert empty.n_windows == 0 and empty.score_mean is None


def test_health_payload_measures_the_system_and_takes_counters():
    h = msg.health_payload(IDENTITY, uptime_s=12.5, outbox_depth=3, dropped_frames=2, lag_s=0.01)
    body = json.loads(h.to_bytes())
    assert body["schema"] == "factoryedge.health/1"
    assert body["outbox_depth"] == 3 and body["dropped_frames"] == 2 and body["cpu_count"] >= 1
    assert body["cpu_temp_c"] is None or 0 < body["cpu_temp_c"] < 150
    with pytest.raises(ConfigError, match="unknown_counter"):
        msg.health_payload(IDENTITY, uptime_s=1, unknown_counter=1)


def test_status_payload():
    s = json.loads(msg.status_payload(IDENTITY, "offline", "connection_lost", "c1").to_bytes())
    assert s["schema"] == "factoryedge.status/1" and s["state"] == "offline" and s["reason"] == "connection_lost"
    with pytest.raises(ConfigError, match="state"):
        msg.status_payload(IDENTITY, "sleeping", "connected", "c1")


@pytest.mark.parametrize("raw, expected", [
    (b'{"command": "set_threshold", "args": {"threshold": 4.2}, "request_id": "r-1"}',
     msg.Command("set_threshold", {"threshold": 4.2}, "r-1")),
    (b'{"schema": "factoryedge.command/1", "command": "recalibrate", "request_id": 17}',
     msg.Command("recalibrate", {"duration_s": None}, "17")),
    ('{"command": "reload", "args": {"bundle": "/opt/models/pump-2"}}',
     msg.Command("reload", {"bundle": "/opt/models/pump-2"}, None)),
])
def test_parse_command(raw, expected):
    assert msg.parse_command(raw) == expected


@pytest.mark.parametrize("raw, match", [
    (b"{not json", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"command": "self_destruct"}', "unknown command 'self_destruct'; valid commands: recalibrate, reload, set_threshold"),
    (b'{"args": {}}', "unknown command None"),
    (b'{"command": "set_threshold"}', "threshold: Field required"),
    (b'{"command": "set_threshold", "args": {"threshold": -1}}', "greater than 0"),
    (b'{"command": "set_threshold", "args": {"threshold": 1, "force": true}}', "force"),
    (b'{"command": "set_threshold", "args": [1]}', "args must be a JSON object"),
    (b'{"command": "reload", "extra": 1}', "unknown command fields \\['extra'\\]"),
    (b'{"command": "reload", "request_id": [1]}', "request_id"),
    (b'{"schema": "factoryedge.command/2", "command": "reload"}', "factoryedge.command/2"),
])
def test_parse_command_errors_say_what_is_wrong(raw, match):
    with pytest.raises(ConfigError, match=match):
        msg.parse_command(raw)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.dictionaries(st.text(max_size=10), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=8), max_size=4).map(lambda d: json.dumps(d).encode())))
def test_parse_command_never_fails_with_anything_but_config_error(raw):
    try:
        msg.parse_command(raw)
    except ConfigError:
        pass


def test_command_response_payload():
    r = json.loads(msg.command_response(IDENTITY, request_id="r-1", command="reload", status="accepted",
                                       message="loading", result={"bundle": "x"}).to_bytes())
    assert r["schema"] == "factoryedge.command_response/1"
    assert (r["request_id"], r["command"], r["status"], r["result"]) == ("r-1", "reload", "accepted", {"bundle": "x"})


# -- command limits: checked on the raw bytes before any JSON parsing -------------------------

def _nested(depth: int) -> bytes:
    return b'{"command": "set_threshold", "args": {"threshold": 9, "pad": ' + b"[" * depth + b"]" * depth + b"}}"


def test_a_command_nested_to_the_limit_is_parsed_and_one_deeper_is_refused():
    # the payload's own object and "args" are two levels, so pad may add MAX - 2: parsed, then its
    # arguments are checked (and "pad" is not one)
    with pytest.raises(msg.CommandRefused, match="pad: Extra inputs are not permitted"):
        msg.parse_command(_nested(msg.MAX_COMMAND_DEPTH - 2))
    with pytest.raises(msg.CommandRefused, match=f"nested deeper than {msg.MAX_COMMAND_DEPTH} levels"):
        msg.parse_command(_nested(msg.MAX_COMMAND_DEPTH - 1))


@pytest.mark.parametrize("raw, match", [
    (b"[" * 100_000, "command of 100000 bytes refused: at most 65536 bytes"),
    (b"[" * 60_000, "nested deeper than 32 levels"),
    (b"{" * 60_000, "nested deeper than 32 levels"),
    ("[" * 60_000, "nested deeper than 32 levels"),
    (b'{"command": "reload", "args": {"bundle": "' + b"x" * 70_000 + b'"}}', "at most 65536 bytes"),
])
def test_oversized_and_deeply_nested_commands_are_refused_before_parsing(raw, match):
    with pytest.raises(msg.CommandRefused, match=match):
        msg.parse_command(raw)


def test_brackets_inside_strings_and_escaped_quotes_do_not_count_as_nesting():
    bundle = '[{' * 200 + '\\"[[[\\\\'
    raw = json.dumps({"command": "reload", "args": {"bundle": bundle}, "request_id": "s-1"}).encode()
    assert msg.parse_command(raw) == msg.Command("reload", {"bundle": bundle}, "s-1")


@pytest.mark.parametrize("raw, rid", [
    (b'{"request_id": "deep-1", "command": "reload", "x": ' + b"[" * 5_000 + b"}", "deep-1"),
    (b'{"command": "reload", "request_id": 42, "pad": "' + b"y" * 70_000 + b'"}', "42"),
    (b'{"request_id": "a\\"b", "pad": ' + b"[" * 40, 'a"b'),
    (b'{"request_id": "one", "x": {"request_id": "two"}, "pad": ' + b"[" * 40, None),  # ambiguous: none
    (b'{"command": "explode", "request_id": "r-9"}', "r-9"),
    (b'{"command": "reload", "extra": 1, "request_id": "r-10"}', "r-10"),
    (b"{not json", None),
    (b'{"command": "reload", "request_id": "\\ud800"}', None),  # a lone surrogate is no text to answer with
    (b'{"command": "reload", "args": {"bundle": "\\udfff"}, "request_id": "r-11"}', "r-11"),
])
def test_a_refusal_carries_the_request_id_when_one_can_be_read(raw, rid):
    with pytest.raises(msg.CommandRefused) as refused:
        msg.parse_command(raw)
    assert refused.value.request_id == rid


_JSONISH = st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b",", b":", b"1", b'"a"', b"null",
                                     b'"command"', b'"request_id"', b'"reload"', b"\xff", b" ",
                                     b'"\\ud800"']), max_size=400)


@pytest.mark.fuzz
@settings(max_examples=examples(150), deadline=None)
@given(st.one_of(st.binary(max_size=2000), _JSONISH.map(b"".join),
                 st.integers(0, 3000).map(lambda n: b"[" * n), st.text(max_size=300)))
def test_parse_command_on_arbitrary_bytes_raises_only_command_refused(raw):
    try:
        command = msg.parse_command(raw)
    except msg.CommandRefused as e:
        assert str(e)
    else:  # whatever is accepted can be answered
        msg.command_response(IDENTITY, request_id=command.request_id, command=command.command, status="ok").to_bytes()


def test_a_command_is_bytes_or_text():
    with pytest.raises(msg.CommandRefused, match="not int"):
        msg.parse_command(10**9)
