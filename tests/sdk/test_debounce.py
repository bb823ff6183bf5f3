import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from factoryedge.debounce import Debounce, DebounceConfig
from factoryedge.scoring import ScoreRule


def feed(scorer, scores):
    t = np.arange(len(scores), dtype=float)
    return scorer.update(np.asarray(scores, float), t, t + 1)


def test_single_spike_does_not_raise():
    s = Debounce(1.0, DebounceConfig(k=3, n=5))
    assert feed(s, [0.5, 0.5, 9.0, 0.5, 0.5, 0.5, 9.0, 0.5]) == []
    assert s.windows_over == 2 and s.active is None


def test_k_of_n_raises_once_then_clears_with_hysteresis():
    s = Debounce(1.0, DebounceConfig(k=3, n=5, clear_windows=4, hysteresis=0.8))
    ev = feed(s, [0.5, 1.5, 0.5, 1.6, 1.7, 1.8, 1.9])
    assert [e.kind for e in ev] == ["raised"]
    assert ev[0].severity == "warning" and ev[0].window_start == 4.0
    # 0.9 is below the threshold but above the clear level: still active
    assert feed(s, [0.9] * 10) == []
    ev = feed(s, [0.5, 0.5, 0.5, 0.5])
    assert [e.kind for e in ev] == ["cleared"] and s.active is None
    assert ev[0].peak_score == pytest.approx(1.9)


def test_escalation_by_severity_and_unique_event_ids():
    s = Debounce(1.0, DebounceConfig(k=2, n=3))
    ev = feed(s, [1.2, 1.3, 1.4, 3.0, 3.0, 3.0, 8.0, 8.0, 8.0])
    assert [(e.kind, e.severity) for e in ev] == [("raised", "warning"), ("escalated", "alarm"), ("escalated", "critical")]
    assert len({e.event_id for e in ev}) == 3


def test_threshold_override_and_runtime_change():
    s = Debounce(1.0, DebounceConfig(threshold=10.0, k=1, n=1))
    assert feed(s, [5.0]) == []
    s.set_threshold(2.0)
    assert [e.kind for e in feed(s, [5.0])] == ["raised"]
    with pytest.raises(ValueError, match="positive number"):
        s.set_threshold(-1)


def test_config_validation_names_the_problem():
    with pytest.raises(ValidationError, match="k \\(6\\) must not exceed n \\(5\\)"):
        DebounceConfig(k=6, n=5)
    with pytest.raises(ValidationError, match="must increase"):
        DebounceConfig(severity={"warning": 1.0, "alarm": 5.0, "critical": 2.0})


def test_lower_is_anomalous_rule_raises_on_low_scores_and_clears_when_back_up():
    from factoryedge.scoring import ScoreRule

    s = Debounce(ScoreRule(1.0, higher_is_anomalous=False), DebounceConfig(k=2, n=3, clear_windows=2, hysteresis=0.8))
    events = feed(s, [2.0, 0.4, 0.3, 0.9, 1.5, 1.6])
    assert [e.kind for e in events] == ["raised", "cleared"]
    assert events[0].severity == "alarm"  # median 0.35 is ~2.9x past the threshold in the anomalous direction


def test_replay_counts_raises_per_hour_of_running():
    from factoryedge.debounce import replay
    from factoryedge.scoring import ScoreRule

    scores = np.r_[np.zeros(100), np.ones(5) * 9, np.zeros(100)]
    starts = np.arange(len(scores)) * 0.5
    r = replay(scores, starts, window_s=1.0, rule=ScoreRule(1.0), config=DebounceConfig(k=3, n=5))
    assert r.raised == 1 and r.first_raise_s == starts[102]
    assert abs(r.hours - (starts[-1] + 1.0) / 3600) < 1e-12 and abs(r.per_hour - 1 / r.hours) < 1e-9


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_batches_give_the_events_of_one_window_at_a_time(data):
    """The vectorised quiet-batch path changes nothing: any batching, threshold changes, either direction."""
    higher = data.draw(st.booleans(), label="higher_is_anomalous")
    rule = ScoreRule(1.0, higher_is_anomalous=higher)
    config = DebounceConfig(k=data.draw(st.integers(1, 3)), n=3, clear_windows=data.draw(st.integers(1, 4)))
    scores = np.array(data.draw(st.lists(st.sampled_from([0.2, 0.7, 0.95, 1.0, 1.5, 3.0, 8.0]), max_size=60)))
    times = np.arange(len(scores), dtype=float)
    one, batched = Debounce(rule, config), Debounce(rule, config)
    one._quiet = lambda scores: False  # the reference: every window through the state machine
    got, want, pos = [], [], 0
    while pos < len(scores):
        size = data.draw(st.integers(1, 12), label="batch")
        if data.draw(st.booleans(), label="change threshold"):
            new = data.draw(st.sampled_from([0.5, 1.0, 2.0]))
            one.set_threshold(new)
            batched.set_threshold(new)
        sl = slice(pos, pos + size)
        got += batched.update(scores[sl], times[sl], times[sl] + 1)
        for i in range(pos, min(pos + size, len(scores))):
            want += one.update(scores[i : i + 1], times[i : i + 1], times[i : i + 1] + 1)
        pos += size
    key = [(e.kind, e.severity, e.score, e.window_start, e.n_windows) for e in got]
    assert key == [(e.kind, e.severity, e.score, e.window_start, e.n_windows) for e in want]
    assert (batched.active, batched.windows_seen, batched.windows_over) == (one.active, one.windows_seen,
                                                                               one.windows_over)


def test_a_lowered_threshold_raises_on_the_recent_windows_even_in_a_quiet_batch():
    d = Debounce(ScoreRule(1.0), DebounceConfig(k=2, n=3))
    assert feed(d, [0.7, 0.8]) == []
    d.set_threshold(0.5)  # the two recent windows are anomalous now
    events = feed(d, [0.1])
    assert [e.kind for e in events] == ["raised"]
