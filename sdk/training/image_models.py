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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from factoryedge.errors import ConfigError
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.manifest import FalseRejectBudget, ThresholdRule
from factoryedge.parity import Tolerance, tolerance
from factoryedge.training.image_common import TrainedImageModel


@dataclass(frozen=True)
class Architecture:
    """One entry of ``factoryedge train image``; ``parity_tolerance`` is the export's, from ``factoryedge.parity``."""

    summary: str
    supervised: bool
    parity_tolerance: Tolerance
    fit: Callable[..., TrainedImageModel]


def _patchcore(good: list[np.ndarray], *, seed: int = 0, spec: ImagePreprocessingSpec | None = None,
               rule: ThresholdRule | FalseRejectBudget | None = None, **_: object) -> TrainedImageModel:
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
        calibration_source=f"good training images, each scored by banks built without its fold ({config.folds} folds)",
    )


# Native resolution (sides to multiples of 64), per-image grey-level standardisation, a 64 px
# mirrored margin: measured best on the magnetic tiles (see experiments/patchcore_experiment.py).
PATCHCORE_SPEC = ImagePreprocessingSpec(resize="none", multiple=64, intensity="standardize", margin=64)


# Half scale (blowholes of ~12 px stay 3-10 px), per-image grey-level standardisation, 32 px
# tiles every 16 px; grey levels (v - 110) / 96 put good pixels inside a generator's [-1, 1].
TILED_SPEC = ImagePreprocessingSpec(
    resize="scale", scale=0.5, interpolation="area", intensity="standardize", target_mean=110.0, target_std=32.0,
    tile=32, stride=16, mean=(110 / 255,) * 3, std=(96 / 255,) * 3,
)


def _fanogan(good: list[np.ndarray], *, seed: int = 0, spec: ImagePreprocessingSpec | None = None,
             rule: ThresholdRule | FalseRejectBudget | None = None, config=None, **_: object) -> TrainedImageModel:
    from factoryedge.training.fanogan import FAnoGANConfig, fit_fanogan

    return fit_fanogan(good, spec or TILED_SPEC, config or FAnoGANConfig(seed=seed), rule)


def _autoencoder(good: list[np.ndarray], *, seed: int = 0, spec: ImagePreprocessingSpec | None = None,
                 rule: ThresholdRule | None = None, epochs: int | None = None, config=None, **_: object) -> TrainedImageModel:
    from factoryedge.training.conv_autoencoder import AutoencoderConfig, fit_conv_autoencoder

    config = config or AutoencoderConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
    return fit_conv_autoencoder(good, spec or TILED_SPEC, config, rule)


# Fixed 256 x 256 (most magnetic tiles shrink by at most 0.8 per side; a 5 px pore keeps
# 3-4 px) with per-image grey-level standardisation; the classifier's cells are 16 px.
CLASSIFIER_SPEC = ImagePreprocessingSpec(resize="fixed", size=(256, 256), intensity="standardize")


def _classifier(images: list[np.ndarray], *, labels, masks=None, seed: int = 0,
                spec: ImagePreprocessingSpec | None = None, epochs: int | None = None, config=None,
                **_: object) -> TrainedImageModel:
    from factoryedge.training.defect_classifier import DefectClassifierConfig, fit_defect_classifier

    config = config or DefectClassifierConfig(seed=seed, **({"epochs": epochs} if epochs else {}))
    return fit_defect_classifier(images, labels, masks, spec or CLASSIFIER_SPEC, config)


def supervised_split(data, seed: int = 0, held_out: float = 0.3):
    """Labelled samples (all good images and every defect) split per defect type into a
    training part and a held-out part for evaluation: the classifier needs defects to learn
    from, so test/ alone cannot stay unseen as it does for the good-only models."""
    from sklearn.model_selection import train_test_split

    samples = list(data.train) + list(data.test)
    types = [s.defect_type for s in samples]
    if len(set(types)) < 2:
        raise ConfigError(f"the classifier needs labelled defects; {data.root} holds only {sorted(set(types))} images")
    fit, test = train_test_split(samples, test_size=held_out, stratify=types, random_state=seed)
    return fit, test


ARCHITECTURES: dict[str, Architecture] = {
    "patchcore": Architecture("pretrained patch features vs a memory bank of good patches", False,
                              tolerance("export_memory_bank"), _patchcore),
    "fanogan": Architecture("WGAN-GP generator with an izi_f encoder; residual heatmap", False, tolerance("export"), _fanogan),
    "autoencoder": Architecture("convolutional autoencoder; residual heatmap", False, tolerance("export"), _autoencoder),
    "classifier": Architecture("supervised defect classifier for heavy imbalance", True, tolerance("export"), _classifier),
}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown image model {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
