"""Detection and image metrics through the score rule: both directions of higher_is_anomalous agree."""
import numpy as np
import pytest

pytest.importorskip("sklearn")

from factoryedge.errors import ConfigError  # noqa: E402
from factoryedge.evaluation.image_metrics import image_report  # noqa: E402
from factoryedge.evaluation.metrics import detection_report, ranking_scores, roc_curves  # noqa: E402

NORMAL = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
INNER = np.array([0.55, 0.9, 1.2])
OUTER = np.array([0.8, 0.35])


def test_detection_report_at_the_threshold():
    r = detection_report({"normal": NORMAL, "inner": INNER, "outer": OUTER}, 0.5)
    assert r["threshold"] == 0.5 and r["higher_is_anomalous"] is True
    assert r["false_alarm_rate"] == pytest.approx(2 / 6)  # 0.5 and 0.6: at or above
    assert r["per_class"]["inner"]["detection_rate"] == 1.0 and r["per_class"]["outer"]["detection_rate"] == 0.5
    assert r["per_class"]["inner"]["auroc"] == pytest.approx(17 / 18)


def test_lower_is_anomalous_mirrors_higher_is_anomalous():
    """Negated scores with a negated threshold and the other direction: every figure is the same."""
    scores = {"normal": NORMAL, "inner": INNER, "outer": OUTER}
    higher = detection_report(scores, 0.5)
    lower = detection_report({k: -v for k, v in scores.items()}, -0.5, higher_is_anomalous=False)
    assert lower["higher_is_anomalous"] is False and lower["threshold"] == -0.5
    for key in ("false_alarm_rate", "n_normal_windows"):
        assert lower[key] == higher[key]
    for block in ("inner", "outer"):
        assert lower["per_class"][block] == pytest.approx(higher["per_class"][block])
    assert lower["overall"] == pytest.approx(higher["overall"])
    assert lower["overall"]["auroc"] > 0.5  # the sign flip: sklearn would otherwise read it as < 0.5
    roc_h, roc_l = roc_curves(scores), roc_curves({k: -v for k, v in scores.items()}, higher_is_anomalous=False)
    assert roc_l["inner"][2] == pytest.approx(roc_h["inner"][2])
    np.testing.assert_array_equal(ranking_scores([1.0, -2.0], higher_is_anomalous=False), [-1.0, 2.0])


def test_image_report_in_both_directions():
    scores = [0.1, 0.2, 0.3, 0.7, 0.9, 0.25]
    types = ["good", "good", "good", "pit", "crack", "crack"]
    higher = image_report(scores, types, 0.3)
    assert higher["false_reject_rate"] == pytest.approx(1 / 3) and higher["per_type"]["pit"]["recall"] == 1.0
    lower = image_report([-s for s in scores], types, -0.3, higher_is_anomalous=False)
    assert lower["false_reject_rate"] == higher["false_reject_rate"] and lower["higher_is_anomalous"] is False
    assert lower["overall"] == pytest.approx(higher["overall"])
    for t in ("pit", "crack"):
        assert lower["per_type"][t] == pytest.approx(higher["per_type"][t])
    ranked_only = image_report([-s for s in scores], types, higher_is_anomalous=False)
    assert ranked_only["overall"]["auroc"] == higher["overall"]["auroc"] and "threshold" not in ranked_only


def test_a_non_finite_threshold_is_refused():
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        detection_report({"normal": NORMAL, "inner": INNER}, float("nan"))
