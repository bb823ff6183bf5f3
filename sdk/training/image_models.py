"""The image architectures behind ``factoryedge train image``, each fitted to one TrainedImageModel.

- ``patchcore``: pretrained EfficientNet-Lite0 patch features against a memory bank of good
  patches (the strongest on the magnetic tiles: image AUROC about 0.955). Good parts only.
- ``fanogan``: WGAN-GP generator with an izi_f encoder; residual heatmap. Good parts only.
- ``autoencoder``: convolutional autoencoder; residual heatmap. Good parts only.
- ``classifier``: supervised defect classifier for lines with labelled defects (imbalance
  aware). Needs defective examples.

Each entry imports its torch code only when used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from factoryedge.errors import ConfigError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import ThresholdRule
from factoryedge.training.image_common import TrainedImageModel


@dataclass(frozen=True)
class Architecture:
    summary: str
    supervised: bool
    parity_tolerance: float
    fit: Callable[..., TrainedImageModel]


def _patchcore(good: list[np.ndarray], *, seed: int = 0, spec: ImagePreprocessingSpec | None = None,
               rule: ThresholdRule | None = None, **_: object) -> TrainedImageModel:
    from factoryedge.training.patchcore import ARCHITECTURE, PatchCoreConfig, fit_patchcore

    config = PatchCoreConfig(seed=seed)
    spec = spec or PATCHCORE_SPEC
    fitted = fit_patchcore(good, spec, config, rule)
    return TrainedImageModel(
        module=fitted.model,
        architecture=ARCHITECTURE,
        spec=spec,
        threshold=fitted.threshold,
        rule=rule or ThresholdRule(quantile=0.99, margin=1.0),
        calibration=fitted.calibration,
        calibration_scores=fitted.calibration_scores,
        score_definition="largest per-patch distance to the memory bank of good patches, standardised per border "
                         "class with held-out good statistics and summed over three feature scales",
        parameters={"branches": [vars(b) for b in config.branches], "margin": config.margin,
                    "max_patches": config.max_patches, "folds": config.folds, "seed": config.seed},
        info=fitted.info,
    )


# Native resolution (sides to multiples of 64), per-image grey-level standardisation, a 64 px
# mirrored margin: measured best on the magnetic tiles (see exporters/patchcore_experiment).
PATCHCORE_SPEC = ImagePreprocessingSpec(resize="none", multiple=64, intensity="standardize", margin=64)


def _lazy(module: str, function: str) -> Callable[..., TrainedImageModel]:
    def fit(*args, **kwargs) -> TrainedImageModel:
        return getattr(importlib.import_module(module), function)(*args, **kwargs)

    return fit


ARCHITECTURES: dict[str, Architecture] = {
    "patchcore": Architecture("pretrained patch features vs a memory bank of good patches", False, 1e-3, _patchcore),
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown image model {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
