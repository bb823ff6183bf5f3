"""An image bundle on the device: camera frame in, anomaly score and heatmap out.

The frame goes through the manifest's preprocessing (the same numpy code training used, so
there is no skew), then through the backend (TensorRT or ONNX Runtime). A tiled model scores
every tile in one batch and the part's score is the worst tile's; a whole-image model scores
the frame at its own size. The heatmap is put back on the frame's pixel grid only when it is
asked for (the reject archive, a display), so a decision never waits for it.

Camera frames arrive as OpenCV gives them: BGR (H, W, 3) or grey (H, W), uint8. A model
trained on grey images accepts BGR frames (converted with OpenCV's own fixed-point weights)
and a colour model accepts grey frames (repeated into three channels).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle, load_bundle
from factoryedge.errors import ConfigError, DataError
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor, TileLayout, bgr_to_gray, stitch
from factoryedge.runtimes.backends.select import open_backend
from factoryedge.scoring import ScoreRule
from factoryedge.signing import PublicKey

log = logging.getLogger(__name__)


@dataclass
class ImageResult:
    """One frame's verdict material. ``heatmap`` (float32, the frame's H x W) is computed on first access.

    ``rule`` is the model's (the manifest's threshold and direction), so ``is_anomalous`` is
    the verdict training evaluated.
    """

    score: float
    rule: ScoreRule
    tile_scores: np.ndarray
    _maps: np.ndarray | None = field(default=None, repr=False)
    _layout: TileLayout | None = field(default=None, repr=False)
    _heatmap: np.ndarray | None = field(default=None, repr=False)

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def is_anomalous(self) -> bool:
        return self.rule.exceeds(self.score)

    @property
    def heatmap(self) -> np.ndarray | None:
        if self._heatmap is None and self._maps is not None and self._layout is not None:
            self._heatmap = stitch(self._maps, self._layout)
        return self._heatmap


class ImageModel:
    """Scores camera frames with an image bundle. Not thread-safe: one scoring thread per model."""

    def __init__(self, bundle: Bundle, backend) -> None:
        bundle.require_kind("image")
        m = bundle.manifest
        if not isinstance(m.preprocessing, ImagePreprocessingSpec):
            raise DataError(f"bundle {bundle.path}: image model without image preprocessing ({m.preprocessing.type!r})")
        self.bundle = bundle
        self.backend = backend
        self.spec: ImagePreprocessingSpec = m.preprocessing
        self.name = m.name
        self.version = m.version
        self.rule = ScoreRule.from_score_info(m.score)
        self._score_output = m.score.output
        self._heatmap_output = m.score.detail_output
        self._pre = ImagePreprocessor(self.spec)

    @property
    def threshold(self) -> float:
        """The manifest's threshold; ``rule`` also says which side of it is anomalous."""
        return self.rule.threshold

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto",
             trusted_keys: Sequence[PublicKey] | None = None) -> ImageModel:
        """Verify the bundle (signature when ``trusted_keys``, hashes, schema) and open the backend
        (``auto``, ``onnxruntime``, ``tensorrt``)."""
        bundle = load_bundle(path, trusted_keys=trusted_keys)
        bundle.require_kind("image")
        return cls(bundle, open_backend(bundle, backend))

    def score(self, frame: np.ndarray) -> ImageResult:
        """Score one frame; a frame that is not an image (wrong type, empty, odd channels) raises DataError."""
        x, layout = self.preprocess(frame)
        out = self.backend.run_single(x)
        tile_scores = np.asarray(out[self._score_output], dtype=np.float32).reshape(len(x))
        if not np.all(np.isfinite(tile_scores)):
            raise DataError(f"model {self.name} {self.version} returned a non-finite score {tile_scores.tolist()} "
                            f"for a frame of shape {frame.shape}")
        maps = out.get(self._heatmap_output) if self._heatmap_output else None
        worst = tile_scores.max() if self.rule.higher_is_anomalous else tile_scores.min()
        return ImageResult(float(worst), self.rule, tile_scores, maps, layout)

    def preprocess(self, frame: np.ndarray) -> tuple[np.ndarray, TileLayout]:
        try:
            return self._pre.with_layout(self._as_model_colour(frame))
        except ConfigError as e:
            raise DataError(f"frame cannot be scored by {self.name}: {e}") from None

    def _as_model_colour(self, frame: np.ndarray) -> np.ndarray:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            what = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
            raise DataError(f"a frame must be a uint8 image array (H, W) or (H, W, 3), got {what}")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[..., 0]
        if self.spec.colour == "gray" and frame.ndim == 3 and frame.shape[2] == 3:
            return bgr_to_gray(frame)
        if self.spec.colour != "gray" and frame.ndim == 2:
            return np.repeat(frame[..., None], 3, axis=2)
        if self.spec.colour == "rgb" and frame.ndim == 3:
            return np.ascontiguousarray(frame[..., ::-1])  # cameras deliver BGR
        return frame

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> ImageModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
