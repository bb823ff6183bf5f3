"""Run-to-failure judging: episodes from the device's debounce, early episodes, alarm at end, lead time."""
from __future__ import annotations

import numpy as np
import pytest

from factoryedge.debounce import DebounceConfig
from factoryedge.errors import ConfigError, DataError
from factoryedge.evaluation.run_to_failure import (
    Commissioning,
    Episode,
    alarm_episodes,
    evaluate_run,
    judge,
    rms_ratio,
    summary,
    sweep,
)
from tests.sdk.data.snapshot_fixtures import degrading_run


def test_judge_counts_early_episodes_and_lead():
    eps = [Episode(100.0, 200.0), Episode(700.0, 800.0), Episode(900.0, None)]
    r = judge(eps, life_s=1000.0, commissioned_s=150.0)
    # 100 s lies in commissioning and 700 s after half of life: neither is early
    assert r == {"early_episodes": 0, "alarmed": True, "lead_s": 100.0, "episodes": 3}
    assert judge([Episode(300.0, 400.0)], 1000.0, 150.0)["early_episodes"] == 1
    assert judge([Episode(300.0, 400.0)], 1000.0, 150.0)["alarmed"] is False
    assert judge([], 1000.0, 150.0)["lead_s"] == 0.0


def test_episodes_follow_the_debounce():
    scores = np.r_[np.zeros(10), np.ones(3) * 5, np.zeros(20), np.ones(2) * 5, np.zeros(5), np.ones(6) * 5]
    starts = np.arange(len(scores)) * 10.0
    eps = alarm_episodes(scores, starts, 0.1, 1.0, DebounceConfig(k=3, n=5, clear_windows=10))
    # one raise at the third high score, cleared after 10 low ones; two highs alone never raise
    assert eps[0].start_s == 120.0 and eps[0].end_s is not None
    assert len(eps) == 2 and eps[1].end_s is None


def test_commissioning_rejects_bad_periods():
    with pytest.raises(ConfigError, match="skip_s"):
        Commissioning(-1, 10)
    with pytest.raises(ConfigError, match="duration_s"):
        Commissioning(0, 0)


@pytest.fixture(scope="module")
def degrading():
    return degrading_run()


def test_rms_rule_on_a_simulated_degradation(degrading):
    comm = Commissioning(skip_s=0.0, duration_s=600.0)
    w, _, starts = degrading.windows(2560, 2560)
    rms = rms_ratio(w, comm.mask(starts))
    assert np.median(rms[comm.mask(starts)]) == pytest.approx(1.0)
    ev = evaluate_run("sim", degrading.life_s, starts, 0.1, {"rms_rule": rms}, comm, DebounceConfig())
    r = ev.methods["rms_rule"].result
    assert r["early_episodes"] == 0 and r["alarmed"]
    # the fault starts at 1500 s of a 1990 s life: the alarm comes after it, before the end
    assert 0 < r["lead_s"] < degrading.life_s - 1500.0
    curve = sweep(ev, "rms_rule", np.array([1.1, 2.0, 50.0]), DebounceConfig())
    leads = [c["lead_s"] for c in curve]
    assert leads[0] >= leads[1] > leads[2] == 0.0  # a higher threshold alarms later or never
    s = summary([ev])["rms_rule"]
    assert s["alarmed_runs"] == 1 and s["median_lead_s"] == r["lead_s"]


def test_commissioning_past_half_of_life_is_refused(degrading):
    w, _, starts = degrading.windows(2560, 2560)
    comm = Commissioning(0.0, 1200.0)
    with pytest.raises(DataError, match="after half of its life"):
        evaluate_run("sim", degrading.life_s, starts, 0.1, {"rms_rule": rms_ratio(w, comm.mask(starts))}, comm,
                     DebounceConfig())
