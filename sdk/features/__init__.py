"""Preprocessing shared by training and the device: one implementation, recorded in the bundle."""
from __future__ import annotations

from factoryedge.features.vibration import (
    FeatureExtractor,
    FrameExtractor,
    VibrationFeatureSpec,
    VibrationFrameSpec,
)

VibrationSpec = VibrationFeatureSpec | VibrationFrameSpec


def make_preprocessor(spec: VibrationSpec) -> FeatureExtractor | FrameExtractor:
    """The extractor that turns windows into model inputs for a manifest's preprocessing spec."""
    if isinstance(spec, VibrationFeatureSpec):
        return FeatureExtractor(spec)
    return FrameExtractor(spec)
