"""What every image-model trainer hands to the bundle exporter.

PatchCore, f-AnoGAN, the convolutional autoencoder and the supervised defect classifier all
end as a torch module that takes the preprocessed input ``ImagePreprocessor`` produces
(float32 (N, 3, H, W)) and returns ``(score (N,),)`` or ``(score (N,), heatmap (N, h, w))``,
higher meaning more anomalous, plus the threshold and the evidence it came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import FalseRejectBudget, ScoreStats, ThresholdRule


@dataclass
class TrainedImageModel:
    """A fitted image model ready for ``build_image_bundle``.

    ``rule`` is None where the threshold was not calibrated on good parts alone (a supervised
    classifier's operating point); ``info`` carries training provenance and evaluation
    figures into the manifest; ``curves`` maps report file names (``learning_curve.csv``,
    ``learning_curve.png``) to their bytes, written under ``reports/`` in the bundle.
    ``calibration_scores`` are good parts the model did not learn from, and
    ``calibration_source`` says which: the manifest's expected false-reject rate rests on them.
    """

    module: nn.Module
    architecture: str
    spec: ImagePreprocessingSpec
    threshold: float
    rule: ThresholdRule | FalseRejectBudget | None
    calibration: ScoreStats
    calibration_scores: np.ndarray
    score_definition: str
    parameters: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    curves: dict[str, bytes] = field(default_factory=dict)
    calibration_source: str = "held-out good images (not trained on)"
