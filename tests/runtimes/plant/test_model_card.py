"""The operator page's model card says how the threshold was set: the false-reject budget and its estimate."""
from __future__ import annotations

import dataclasses

from factoryedge.bundle import Bundle
from factoryedge.manifest import FalseRejectBudget
from factoryedge.runtimes.plant.live import model_card
from tests.support.image_bundle import make_image_bundle


def test_card_names_the_budget_estimate_and_bound(tmp_path):
    bundle = make_image_bundle(tmp_path / "b")  # q99 rule (margin 3) on 20 good parts, none above it
    m = bundle.manifest
    card = model_card(bundle, "onnxruntime")
    assert card.threshold_rule == ("median + 3 x (q99 - median) on 20 held-out good images: expected 0 %, "
                                   "95 % bound 14 %")
    budget = m.model_copy(update={"score": m.score.model_copy(update={"rule": FalseRejectBudget(max_false_reject=0.01)})})
    card = model_card(dataclasses.replace(bundle, manifest=budget), "onnxruntime")
    assert card.threshold_rule == "false-reject budget 1 % on 20 held-out good images: expected 0 %, 95 % bound 14 %"
    older = m.model_copy(update={"score": m.score.model_copy(update={"false_reject": None})})  # before the estimate
    card = model_card(Bundle(bundle.path, older), "onnxruntime")
    assert card.threshold_rule == "median + 3 x (q99 - median) of held-out normal scores"
