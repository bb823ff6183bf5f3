"""torch to ONNX parity: ONNX Runtime directly, the core's tolerance table and score rule, named input errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from factoryedge.errors import ConfigError, ExportError
from factoryedge.exporters.onnx_export import EXPORT_TOLERANCE, check_parity, export_onnx
from factoryedge.parity import Tolerance, tolerance


class MeanSquare(nn.Module):
    """score = mean(x^2) per row, detail = x^2."""

    def forward(self, x):
        detail = x * x
        return detail.mean(1), detail


class Nudged(nn.Module):
    """ONNX gives mean(x^2); torch at run time adds 1e-5: inside the export tolerance, across a threshold."""

    def forward(self, x):
        score = (x * x).mean(1)
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            score = score + 1e-5
        return (score,)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    golden = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    export_onnx(MeanSquare(), golden, path, ["score", "detail"])
    return path, golden


def test_parity_record_and_reference_outputs(exported):
    path, golden = exported
    record, ort = check_parity(MeanSquare(), path, golden, threshold=1.0)
    assert record.tolerance == EXPORT_TOLERANCE.atol == tolerance("export").atol and record.decisions_changed == 0
    assert set(record.max_abs_diff) == {"score", "detail"} and record.n_inputs == 6
    assert record.runtime.startswith("onnxruntime ") and ort["detail"].shape == (6, 4)
    np.testing.assert_allclose(ort["score"], (golden**2).mean(1), rtol=1e-6)


def test_a_decision_that_flips_under_the_score_rule_refuses_the_export(tmp_path):
    golden = np.full((2, 4), 1.0, np.float32)  # mean(x^2) = 1.0 exactly: on the threshold
    path = tmp_path / "nudged.onnx"
    export_onnx(Nudged(), golden, path, ["score"])
    # higher is anomalous: 1.0 and 1.00001 are both at or above 1.0, nothing changes
    record, _ = check_parity(Nudged(), path, golden, threshold=1.0, tolerance=Tolerance(atol=1e-3))
    assert record.decisions_changed == 0
    # lower is anomalous: torch's 1.00001 is normal, ONNX Runtime's 1.0 anomalous
    with pytest.raises(ExportError, match=r"differs from torch: .* 2 of 2 golden decisions changed .* at or below"):
        check_parity(Nudged(), path, golden, threshold=1.0, tolerance=Tolerance(atol=1e-3), higher_is_anomalous=False)


def test_golden_inputs_that_do_not_fit_the_graph_are_named(exported):
    path, golden = exported
    with pytest.raises(ExportError, match=r"golden input 'input' must have shape \['batch', 4\].*got \[6, 4, 1\]"):
        check_parity(MeanSquare(), path, golden[..., None], threshold=1.0)
    with pytest.raises(ExportError, match=r"must have shape \['batch', 4\], got \[6, 3\] \(axis 1\)"):
        check_parity(MeanSquare(), path, golden[:, :3], threshold=1.0)
    with pytest.raises(ExportError, match="numeric numpy array, got list"):
        check_parity(MeanSquare(), path, golden.tolist(), threshold=1.0)
    with pytest.raises(ConfigError, match="export tolerance is absolute"):
        check_parity(MeanSquare(), path, golden, threshold=1.0, tolerance=tolerance("fp16"))
    with pytest.raises(ConfigError, match="threshold must be a finite number"):
        check_parity(MeanSquare(), path, golden, threshold=float("nan"))


def test_a_module_with_other_outputs_than_the_graph_is_refused(exported):
    path, golden = exported
    with pytest.raises(ExportError, match=r"returns 1 outputs but the exported graph has \['score', 'detail'\]"):
        check_parity(Nudged(), path, golden, threshold=1.0)
