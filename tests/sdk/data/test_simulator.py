"""The bearing simulator: textbook defect frequencies, determinism, onset, and defect lines in the envelope."""
import time

import numpy as np
import pytest
from scipy.stats import kurtosis

from factoryedge.data.simulator import SKF_6205, BearingGeometry, simulate_bearing
from factoryedge.errors import ConfigError
from factoryedge.features.vibration import SKF6205_ORDERS
from tests.sdk.data.spectra import envelope_spectrum, line_ratio, peak_hz

FS = 12000.0
RPM = 1797.0


def test_skf6205_defect_frequencies_match_the_cwru_table():
    f = SKF_6205.frequencies_hz(RPM)
    assert f["BPFI"] == pytest.approx(162.2, abs=0.1)
    assert f["BPFO"] == pytest.approx(107.4, abs=0.1)
    assert f["BSF"] == pytest.approx(141.2, abs=0.1)
    assert f["FTF"] == pytest.approx(11.93, abs=0.01)
    # The feature extractor's constants and the geometry must agree, or training looks in the wrong place.
    for key, order in SKF6205_ORDERS.items():
        assert SKF_6205.orders()[key] == pytest.approx(order, rel=2e-4), key
    assert SKF_6205.bsf() == pytest.approx(2 * SKF_6205.ball_spin())


def test_geometry_identities_and_contact_angle():
    g = BearingGeometry(n_balls=12, ball_diameter=10.0, pitch_diameter=50.0, contact_angle_deg=15.0)
    # Every ball passes a point on each race once per relative revolution: BPFO + BPFI = n.
    assert g.bpfo() + g.bpfi() == pytest.approx(12)
    assert g.ftf() == pytest.approx(g.bpfo() / 12)
    assert g.bpfi() < BearingGeometry(12, 10.0, 50.0, 0.0).bpfi()  # contact angle shortens d/D cos(a)
    with pytest.raises(ConfigError, match="pitch diameter"):
        BearingGeometry(9, 2.0, 1.0)


def test_same_seed_same_signal_other_seed_other_signal():
    a = simulate_bearing(1.0, FS, fault="inner_race", seed=7)
    b = simulate_bearing(1.0, FS, fault="inner_race", seed=7)
    c = simulate_bearing(1.0, FS, fault="inner_race", seed=8)
    assert np.array_equal(a.signal, b.signal)
    assert not np.allclose(a.signal, c.signal)
    assert a.signal.shape == (12000, 1) and a.channels == ("x",) and a.sample_rate == FS


def test_labels_onset_and_meta():
    normal = simulate_bearing(0.5, FS)
    assert normal.label == "normal" and normal.fault_onset_s is None
    ir = simulate_bearing(0.5, FS, fault="inner_race", fault_onset_s=0.2)
    assert ir.label == "inner_race" and ir.fault_onset_s == 0.2
    assert ir.meta["defect_hz"] == pytest.approx(162.19, abs=0.01) and ir.meta["rpm"] == RPM
    assert simulate_bearing(0.5, FS, fault="ball").fault_onset_s == 0.0


def test_before_onset_is_the_healthy_machine_after_onset_is_not():
    normal = simulate_bearing(6.0, FS, seed=3).signal[:, 0]
    faulty = simulate_bearing(6.0, FS, fault="outer_race", fault_onset_s=3.0, seed=3).signal[:, 0]
    cut = int(3.0 * FS)
    # Same seed: the healthy components are identical, so the fault adds nothing before onset.
    np.testing.assert_allclose(faulty[:cut], normal[:cut], atol=1e-9)
    assert abs(kurtosis(faulty[:cut])) < 0.5
    assert kurtosis(faulty[cut:]) > 3.0
    assert faulty[cut:].std() > 1.5 * normal[cut:].std()


def test_developing_fault_grows_over_growth_s():
    rec = simulate_bearing(10.0, FS, fault="outer_race", fault_onset_s=2.0, growth_s=6.0, seed=4)
    x = rec.signal[:, 0]
    rms = [x[int(a * FS):int(b * FS)].std() for a, b in ((0, 2), (2.5, 3.5), (5, 6), (8.5, 10))]
    assert rms[0] < rms[1] < rms[2] < rms[3]
    assert rms[3] > 2 * rms[0]


@pytest.mark.parametrize("fault,key", [("outer_race", "BPFO"), ("inner_race", "BPFI"), ("ball", "BSF")])
def test_defect_line_stands_out_in_the_envelope_spectrum(fault, key):
    rec = simulate_bearing(4.0, FS, rpm=RPM, fault=fault, seed=5)
    expected = SKF_6205.frequencies_hz(RPM)[key]
    freqs, mag = envelope_spectrum(rec.signal[:, 0], FS, (2000.0, 4000.0))
    assert line_ratio(freqs, mag, expected) > 10
    if fault == "outer_race":
        # No load-zone modulation for a fixed defect: BPFO is the strongest envelope line.
        assert peak_hz(freqs, mag, 20, 500) == pytest.approx(expected, rel=0.01)
    normal = simulate_bearing(4.0, FS, rpm=RPM, seed=5)
    assert line_ratio(*envelope_spectrum(normal.signal[:, 0], FS, (2000.0, 4000.0)), expected) < 5


def test_inner_race_strikes_are_modulated_by_shaft_rotation():
    rec = simulate_bearing(4.0, FS, rpm=RPM, fault="inner_race", seed=6)
    freqs, mag = envelope_spectrum(rec.signal[:, 0], FS, (2000.0, 4000.0))
    bpfi, shaft = SKF_6205.frequencies_hz(RPM)["BPFI"], RPM / 60
    assert line_ratio(freqs, mag, shaft, rel_tol=0.02) > 10  # 1x in the envelope: the load zone
    assert line_ratio(freqs, mag, bpfi - shaft, rel_tol=0.01) > 5  # and the sideband it makes


def test_three_axis_sensor_sees_the_impacts_strongest_on_the_loaded_axis():
    rec = simulate_bearing(2.0, 25600.0, fault="outer_race", n_channels=3, seed=2)
    assert rec.channels == ("x", "y", "z") and rec.signal.shape == (51200, 3)
    kurt = kurtosis(rec.signal, axis=0)
    assert kurt[0] > kurt[1] > kurt[2]
    assert np.corrcoef(rec.signal.T)[0, 1] < 0.9  # independent noise and paths, not copies


def test_sixty_seconds_three_axes_at_25k6_is_fast():
    simulate_bearing(0.1, 25600.0, n_channels=3)  # warm up imports and allocators
    t0 = time.perf_counter()
    rec = simulate_bearing(60.0, 25600.0, fault="ball", fault_onset_s=20.0, growth_s=20.0, n_channels=3)
    elapsed = time.perf_counter() - t0
    assert rec.signal.shape == (1536000, 3)
    # ~0.45 s on a 2-core box; a per-sample Python loop would take tens of seconds. Slack for CI noise.
    assert elapsed < 3.0


def test_resonance_default_scales_with_sample_rate_and_stays_below_nyquist():
    assert simulate_bearing(0.1, 12000.0).meta["resonance_hz"] == 3000.0
    assert simulate_bearing(0.1, 25600.0).meta["resonance_hz"] == 6400.0
    assert simulate_bearing(0.1, 48000.0).meta["resonance_hz"] == 8000.0
    with pytest.raises(ConfigError, match="resonance_hz=6000") as e:
        simulate_bearing(1.0, 12000.0, resonance_hz=6000.0)
    assert "0.45 x fs" in str(e.value)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"fault": "cage"}, "'cage'"),
        ({"fault_onset_s": 0.5}, "without a fault"),
        ({"fault": "ball", "fault_onset_s": 5.0}, "fault_onset_s=5.0"),
        ({"n_channels": 2}, "n_channels=2"),
        ({"sample_rate": -1}, "sample_rate=-1"),
        ({"tones": [(7000.0, 0.1)]}, "7000.0"),
    ],
)
def test_bad_arguments_raise_config_errors_that_name_them(kwargs, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as e:
        simulate_bearing(1.0, **kwargs)
    assert "must" in str(e.value)


def test_tones_add_their_line():
    rec = simulate_bearing(2.0, FS, tones=[(100.0, 0.2)], seed=1)
    spec = np.abs(np.fft.rfft(rec.signal[:, 0]))
    freqs = np.fft.rfftfreq(rec.n_samples, 1 / FS)
    assert freqs[np.argmax(spec)] == pytest.approx(100.0, abs=0.5)
