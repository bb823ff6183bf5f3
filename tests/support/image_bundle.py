"""A real image bundle for runtime tests: a tiny torch model exported through build_image_bundle.

The model is a fixed template difference, so verdicts are predictable: the heatmap is the
mean absolute deviation of each 4 x 4 cell from the grey level ``level`` of a good part,
and the score its maximum. A dark pit or scratch on a uniform part lights up its cells.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from factoryedge.bundle import Bundle
from factoryedge.exporters.image_bundle import build_image_bundle, golden_groups
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor
from factoryedge.manifest import ThresholdRule
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.image_common import TrainedImageModel

# Unit mean/std keep the input in [0, 1] grey levels / 255.
SPEC = ImagePreprocessingSpec(resize="fixed", size=(64, 64), multiple=4, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class TemplateDiff(nn.Module):
    def __init__(self, level: float):
        super().__init__()
        self.register_buffer("level", torch.tensor(level / 255.0))

    def forward(self, x: torch.Tensor):
        heat = F.avg_pool2d((x[:, :1] - self.level).abs(), 4)[:, 0]
        return heat.flatten(1).amax(1), heat


def uniform_part(level: int = 180, size: tuple[int, int] = (96, 128), seed: int = 0, defect: bool = False) -> np.ndarray:
    """A BGR frame of a flat part with a little sensor noise; ``defect`` adds a dark pit."""
    rng = np.random.default_rng(seed)
    img = np.clip(level + rng.normal(0, 2.0, size), 0, 255).astype(np.uint8)
    if defect:
        y, x = size[0] // 2 + int(rng.integers(-10, 10)), size[1] // 2 + int(rng.integers(-10, 10))
        img[y - 5 : y + 5, x - 5 : x + 5] = 40
    return np.repeat(img[..., None], 3, axis=2)


def make_image_bundle(directory: Path, spec: ImagePreprocessingSpec = SPEC, level: int = 180, name: str = "template") -> Bundle:
    module = TemplateDiff(level).eval()
    good = [uniform_part(level, seed=i)[..., 0] for i in range(20)]
    bad = [uniform_part(level, seed=100 + i, defect=True)[..., 0] for i in range(4)]
    pre = ImagePreprocessor(spec)
    with torch.no_grad():
        scores = np.array([float(module(torch.from_numpy(pre(g)))[0].max()) for g in good])
    rule = ThresholdRule(quantile=0.99, margin=3.0)
    threshold, stats = calibrate_threshold(scores, rule)
    trained = TrainedImageModel(
        module=module, architecture="template_diff", spec=spec, threshold=threshold, rule=rule,
        calibration=stats, calibration_scores=scores,
        score_definition="largest mean absolute deviation of a 4 x 4 cell from the good grey level",
        parameters={"level": level},
    )
    return build_image_bundle(trained, directory, name, golden_groups(spec, good[:2] + bad[:2]))
