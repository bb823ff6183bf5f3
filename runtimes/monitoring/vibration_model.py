"""A vibration bundle ready to score windows: its preprocessing, its backend and its score rule.

The twin of ``inspection.image_model.ImageModel``. The live monitor and the offline scoring
of recordings (``factoryedge evaluate``) both call ``score``, so there is one scoring loop
and one place where a manifest's score output, detail output and rule are read. Not
thread-safe: one scoring thread per model (the monitor holds its lock around it).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from factoryedge.bundle import Bundle, load_bundle
from factoryedge.errors import BundleError
from factoryedge.features import make_preprocessor
from factoryedge.runtimes.backends.select import open_backend
from factoryedge.scoring import ScoreRule
from factoryedge.signing import PublicKey


class VibrationModel:
    """Scores (k, window, channels) float32 windows with a bundle's model, in batches of ``batch``."""

    def __init__(self, bundle: Bundle, backend, batch: int = 256) -> None:
        bundle.require_kind("vibration")
        m = bundle.manifest
        self.bundle = bundle
        self.backend = backend
        self.batch = int(batch)
        self.spec = m.preprocessing
        self.name = m.name
        self.version = m.version
        self.rule = ScoreRule.from_score_info(m.score)
        self.detail_names: list[str] = list(m.score.detail_names)
        self._preprocess = make_preprocessor(m.preprocessing)
        self._score_output = m.score.output
        self._detail_output = m.score.detail_output

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", batch: int = 256,
             trusted_keys: Sequence[PublicKey] | None = None) -> VibrationModel:
        """Verify the bundle (signature when ``trusted_keys``, hashes, schema, kind) and open the backend
        (``auto``, ``onnxruntime``, ``tensorrt``)."""
        bundle = load_bundle(path, trusted_keys=trusted_keys)
        bundle.require_kind("vibration")
        model = cls(bundle, open_backend(bundle, backend), batch)
        try:
            model.check_runs()
        except BundleError:
            model.close()
            raise
        return model

    def check_runs(self) -> None:
        """Score one synthetic window end to end; BundleError in one line if the model cannot.

        A bundle can verify (hashes, schema, signature) and still hold a model for other
        features than its preprocessing makes, e.g. one hashed into a hand-edited manifest.
        Found here, that is a refused start or reload; found at the first live block, it
        would stop the device.
        """
        rng = np.random.default_rng(0)
        window = rng.standard_normal((1, self.spec.window, len(self.spec.channels))).astype(np.float32)
        try:
            scores, _ = self.score(window)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime and TensorRT raise their own untyped errors
            reason = " ".join(f"{type(e).__name__}: {e}".split())
            raise BundleError(f"bundle {self.bundle.path}: its model cannot score a window of its own "
                              f"preprocessing ({reason})") from None
        if scores.shape != (1,):
            raise BundleError(f"bundle {self.bundle.path}: its model gives {scores.size} scores for one window; "
                              f"output {self._score_output!r} must hold one score per window")

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    @property
    def window_s(self) -> float:
        return self.spec.window / self.spec.sample_rate

    def score(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores float64 (k,), detail residuals (k, d) or None) for a stack of windows.

        Features are computed for the whole stack at once (the extractor works in cache-sized
        chunks of its own); the backend gets them ``batch`` at a time, the size its engine
        was built for. A backlog after a reconnect thus costs less per window than live blocks.
        """
        inputs = self._preprocess(windows)
        if 0 < len(inputs) <= self.batch:  # a live block: one call, nothing to join
            out = self.backend.run_single(inputs)
            return (out[self._score_output].ravel().astype(np.float64),
                    out[self._detail_output] if self._detail_output else None)
        scores, details = [], []
        for i in range(0, len(inputs), self.batch):
            out = self.backend.run_single(inputs[i : i + self.batch])
            scores.append(out[self._score_output])
            if self._detail_output:
                details.append(out[self._detail_output])
        if not scores:
            return np.empty(0), None
        return np.concatenate(scores).ravel().astype(np.float64), (np.concatenate(details) if details else None)

    def close(self) -> None:
        """Release the backend (TensorRT holds GPU memory until closed)."""
        self.backend.close()

    def __enter__(self) -> VibrationModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
