"""Image bundles: export with parity, preprocessing in the manifest, dynamic sizes, refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from factoryedge.bundle import load_bundle
from factoryedge.errors import BundleError, ExportError
from factoryedge.exporters.image_bundle import build_image_bundle, golden_groups
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import ScoreStats
from factoryedge.training.image_common import TrainedImageModel
from tests.support.image_bundle import SPEC, make_image_bundle, uniform_part

STATS = ScoreStats(n=20, mean=0.1, std=0.01, median=0.1, q90=0.11, q99=0.12, max=0.12)


def trained(module, spec, threshold=0.5, rule=None):
    return TrainedImageModel(module=module, architecture="test", spec=spec, threshold=threshold, rule=rule,
                             calibration=STATS, calibration_scores=np.zeros(20), score_definition="test")


def test_bundle_records_preprocessing_parity_and_golden(tmp_path):
    bundle = make_image_bundle(tmp_path / "b")
    m = bundle.manifest
    assert m.kind == "image" and m.preprocessing == SPEC
    assert [o.name for o in m.model.outputs] == ["score", "heatmap"]
    assert m.score.detail_output == "heatmap"
    assert m.parity.max_abs_diff["score"] <= m.parity.tolerance and m.parity.decisions_changed == 0
    golden = bundle.golden()
    assert golden["input"].shape[1:] == (3, 64, 64)
    # golden holds good and defective parts: both sides of the threshold are covered
    assert (golden["output_score"] < m.score.threshold).any() and (golden["output_score"] >= m.score.threshold).any()
    # the manifest is plain JSON that round-trips
    raw = json.loads((bundle.path / "manifest.json").read_text())
    assert raw["preprocessing"]["type"] == "image" and raw["preprocessing"]["size"] == [64, 64]
    assert load_bundle(bundle.path).manifest == m


class Pooled(nn.Module):
    """Whole images of any size: score = max of 8 x 8 mean levels."""

    def forward(self, x):
        heat = nn.functional.avg_pool2d(x[:, :1], 8)[:, 0]
        return heat.flatten(1).amax(1), heat


def test_variable_size_model_exports_dynamic_height_and_width(tmp_path):
    spec = ImagePreprocessingSpec(multiple=8, mean=(0, 0, 0), std=(1, 1, 1))
    images = [uniform_part(size=(64, 96), seed=1)[..., 0], uniform_part(size=(64, 96), seed=2)[..., 0],
              uniform_part(size=(80, 48), seed=3)[..., 0]]
    groups = golden_groups(spec, images)
    assert sorted(g.shape[2:] for g in groups) == [(64, 96), (80, 48)]
    bundle = build_image_bundle(trained(Pooled(), spec), tmp_path / "v", "pooled", groups)
    shape = bundle.manifest.model.inputs[0].shape
    assert isinstance(shape[2], str) and isinstance(shape[3], str)
    assert bundle.manifest.parity.n_inputs == 3
    golden = bundle.golden()
    assert golden["group1_input"].shape[2:] in {(64, 96), (80, 48)}


class Drifting(nn.Module):
    """Exports fine but ONNX differs from torch: torch adds noise at run time only."""

    def forward(self, x):
        score = x.mean(dim=(1, 2, 3))
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            score = score + 0.01
        return (score,)


def test_parity_failure_writes_nothing(tmp_path):
    groups = golden_groups(SPEC, [uniform_part(seed=1)[..., 0]])
    with pytest.raises(ExportError, match="differs from torch"):
        build_image_bundle(trained(Drifting(), SPEC), tmp_path / "d", "drift", groups)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_classifier_without_heatmap_and_without_rule(tmp_path):
    class Mean(nn.Module):
        def forward(self, x):
            return (torch.sigmoid(x.mean(dim=(1, 2, 3))),)

    groups = golden_groups(SPEC, [uniform_part(seed=1)[..., 0], uniform_part(seed=2, defect=True)[..., 0]])
    bundle = build_image_bundle(trained(Mean(), SPEC, threshold=0.6), tmp_path / "c", "cls", groups)
    assert [o.name for o in bundle.manifest.model.outputs] == ["score"]
    assert bundle.manifest.score.rule is None and bundle.manifest.score.detail_output is None


def test_tampered_image_bundle_is_refused(tmp_path):
    bundle = make_image_bundle(tmp_path / "t")
    with open(bundle.model_path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle.path)


def test_no_golden_is_refused(tmp_path):
    with pytest.raises(ExportError, match="golden"):
        golden_groups(SPEC, [])
