"""Real bearing data: trained on the first part of CWRU's normal recording only, the deep
model must separate every fault class from held-out normal windows (AUROC >= 0.99), beside
the Isolation Forest baseline on the same windows. Figures are written to the test log."""
import json
import logging

import pytest

from factoryedge.errors import DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cwru48():
    from factoryedge.data.cwru import cwru_48k

    try:
        return cwru_48k()
    except DataError as e:
        pytest.skip(f"CWRU data not available: {e}")


@pytest.fixture(scope="module")
def dense_bundle(cwru48, tmp_path_factory):
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle
    from factoryedge.features.vibration import SKF6205_ORDERS, default_feature_spec
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig, train_vibration

    normal = [r for r in cwru48 if r.label == "normal"]
    spec = default_feature_spec(48000, ("DE",), shaft_hz=normal[0].meta["rpm"] / 60, defect_orders=SKF6205_ORDERS)
    out = tmp_path_factory.mktemp("cwru48")
    trained = train_vibration(normal, spec, VibrationTrainConfig(model="dense", fit=FitConfig(epochs=300, patience=40)), out)
    return build_vibration_bundle(trained, out / "bundle", name="cwru48-dense")


def test_dense_autoencoder_detects_every_fault_on_held_out_data(cwru48, dense_bundle, tmp_path):
    from factoryedge.evaluation.vibration import ScoredRecording, evaluate_vibration, format_report
    from factoryedge.runtimes.monitoring.recordings import RecordingScorer

    m = dense_bundle.manifest
    assert max(m.parity.max_abs_diff.values()) <= 1e-4
    held_from = m.provenance.split["train_fraction"] + m.provenance.split["calibration_fraction"]
    scorer = RecordingScorer(dense_bundle)
    items = []
    for rec in cwru48:
        if rec.label == "normal":
            rec = rec.slice_fraction(held_from, 1.0)
        s = scorer.score(rec)
        items.append(ScoredRecording(rec.source, rec.label, s.start_s, s.model, s.baseline))
    report = evaluate_vibration(items, m.score.threshold, m.baseline.threshold, tmp_path, "CWRU 48 kHz dense")
    logging.getLogger("acceptance").warning("\n%s\n%s", format_report(report), json.dumps(report["model"], indent=1))
    per_class = report["model"]["per_class"]
    assert set(per_class) == {"ball", "inner_race"}
    for label, r in per_class.items():
        assert r["auroc"] >= 0.99, (label, r)
    # Held-out normal windows at the stored threshold: a handful of windows, so only a
    # coarse bound is asserted; the exact figure is in the log and the closing note.
    assert report["model"]["false_alarm_rate"] <= 0.05
    assert "baseline" in report and set(report["baseline"]["per_class"]) == {"ball", "inner_race"}
