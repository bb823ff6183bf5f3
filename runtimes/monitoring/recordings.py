"""Scoring whole recordings with a bundle: the device's ``VibrationModel``, offline.

Used by ``factoryedge evaluate``, the demo and tests; the live device loop windows a stream
instead and scores through the same ``VibrationModel.score``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from factoryedge.bundle import Bundle
from factoryedge.data.recording import Recording
from factoryedge.errors import DataError
from factoryedge.features import make_preprocessor
from factoryedge.features.windowing import sliding_windows, window_starts
from factoryedge.runtimes.backends.onnxruntime import OnnxRuntimeBackend
from factoryedge.runtimes.monitoring.vibration_model import VibrationModel

log = logging.getLogger(__name__)

BATCH = 256


@dataclass
class RecordingScores:
    source: str
    label: str
    start_s: np.ndarray
    model: np.ndarray
    baseline: np.ndarray | None


def match_recording(bundle: Bundle, rec: Recording) -> Recording:
    """The recording as the bundle's model needs it, or a DataError saying why it cannot be.

    Channels are matched by name; a file with generic names (WAV, NPY) and the right number
    of channels is taken by position, which is logged.
    """
    spec = bundle.manifest.preprocessing
    if rec.sample_rate != spec.sample_rate:
        raise DataError(
            f"{rec.source} is sampled at {rec.sample_rate:g} Hz but bundle {bundle.manifest.name} expects "
            f"{spec.sample_rate:g} Hz; a rate mismatch alone makes windows look anomalous. "
            "Resample the recording or use a bundle trained at its rate"
        )
    wanted = tuple(spec.channels)
    if rec.channels == wanted:
        return rec
    if all(c in rec.channels for c in wanted):
        return rec.select_channels(wanted)
    if len(rec.channels) == len(wanted):
        log.info("%s: channels %s taken as the bundle's %s by position", rec.source, list(rec.channels), list(wanted))
        return rec
    raise DataError(
        f"{rec.source} has channel(s) {list(rec.channels)}; bundle {bundle.manifest.name} expects {list(wanted)}"
    )


class RecordingScorer:
    """Scores whole recordings with a bundle's model (a ``VibrationModel``) and, if present, its baseline.

    Both run on ONNX Runtime on the CPU, as evaluation must be reproducible on any machine;
    the device's live loop uses the same ``VibrationModel.score``.
    """

    def __init__(self, bundle: Bundle, hop: int | None = None):
        bundle.require_kind("vibration")
        self.bundle = bundle
        m = bundle.manifest
        self.spec = m.preprocessing
        self.hop = hop or self.spec.hop
        self.model = VibrationModel(bundle, OnnxRuntimeBackend(bundle.model_path, m.model.inputs, m.model.outputs),
                                    batch=BATCH)
        self.baseline = None
        if m.baseline is not None:
            self.baseline_preprocess = make_preprocessor(m.baseline.preprocessing)
            self.baseline = OnnxRuntimeBackend(bundle.artefact(m.baseline.file), m.baseline.inputs, m.baseline.outputs)

    def score(self, rec: Recording) -> RecordingScores:
        rec = match_recording(self.bundle, rec)
        windows = sliding_windows(rec.signal, self.spec.window, self.hop)
        starts = window_starts(rec.n_samples, self.spec.window, self.hop) / rec.sample_rate
        model, base = self.score_windows(windows)
        return RecordingScores(source=rec.source, label=rec.label, start_s=starts, model=model, baseline=base)

    def score_windows(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(model scores float32, baseline scores or None) of a stack of windows, higher anomalous."""
        model, _ = self.model.score(windows)
        base = []
        if self.baseline is not None:
            b_spec = self.bundle.manifest.baseline
            for i in range(0, len(windows), BATCH):
                b = self.baseline.run_single(self.baseline_preprocess(windows[i : i + BATCH]))[b_spec.score_output]
                base.append(-b.ravel() if b_spec.negate else b.ravel())
        empty = np.empty(0, dtype=np.float32)
        return (model.astype(np.float32) if len(model) else empty,
                (np.concatenate(base) if base else empty) if self.baseline is not None else None)
