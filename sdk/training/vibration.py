"""Training a vibration anomaly model on normal recordings only, then calibrating its threshold.

Each normal recording is split in time (never shuffled: neighbouring windows overlap and
would leak): the first part trains (its tail validates for early stopping), the next part
calibrates the threshold, and the rest is left untouched for evaluation.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from factoryedge.data.fingerprint import recording_sha256
from factoryedge.data.recording import Recording
from factoryedge.errors import ConfigError, DataError
from factoryedge.features import make_preprocessor
from factoryedge.features.vibration import VibrationFeatureSpec, VibrationFrameSpec
from factoryedge.features.windowing import sliding_windows
from factoryedge.manifest import DataRecord, ScoreStats, ThresholdRule
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.baseline import fit_isolation_forest
from factoryedge.training.models import FeatureAutoencoder, FrameLstmAutoencoder
from factoryedge.training.trainer import FitConfig, FitResult, fit

log = logging.getLogger(__name__)

ModelKind = Literal["dense", "lstm"]


@dataclass
class VibrationTrainConfig:
    model: ModelKind = "dense"
    train_fraction: float = 0.6
    calibration_fraction: float = 0.2
    validation_share: float = 0.2
    train_hop: int | None = None
    fit: FitConfig = field(default_factory=FitConfig)
    rule: ThresholdRule = field(default_factory=ThresholdRule)
    dense_hidden: tuple[int, ...] = (32, 8)
    lstm_frame: int = 256
    lstm_input: Literal["samples", "log_spectrum"] = "log_spectrum"
    lstm_bands: int = 32
    lstm_hidden: int = 64
    lstm_latent: int = 16

    def check(self) -> None:
        if self.model not in ("dense", "lstm"):
            raise ConfigError(f"model must be 'dense' or 'lstm', got {self.model!r}")
        if not (0 < self.train_fraction < 1 and 0 < self.calibration_fraction < 1):
            raise ConfigError("train_fraction and calibration_fraction must lie between 0 and 1")
        if self.train_fraction + self.calibration_fraction > 1:
            raise ConfigError(
                f"train_fraction {self.train_fraction} + calibration_fraction {self.calibration_fraction} exceed 1"
            )


@dataclass
class TrainedVibrationModel:
    module: torch.nn.Module
    preprocessing: VibrationFeatureSpec | VibrationFrameSpec
    feature_spec: VibrationFeatureSpec
    config: VibrationTrainConfig
    calibration_inputs: np.ndarray
    calibration_scores: np.ndarray
    threshold: float
    stats: ScoreStats
    fit_result: FitResult
    detail_names: list[str]
    baseline_onnx: bytes | None
    baseline_params: dict
    baseline_calibration_features: np.ndarray
    data: list[DataRecord]
    fingerprint: str
    split: dict


def split_recording(rec: Recording, cfg: VibrationTrainConfig) -> tuple[Recording, Recording, Recording]:
    """(train, calibration, held-out) parts of a normal recording, in time order."""
    a = cfg.train_fraction
    b = a + cfg.calibration_fraction
    held_out = rec.slice_fraction(b, 1.0) if b < 1.0 else rec.slice_fraction(0.999, 1.0)
    return rec.slice_fraction(0.0, a), rec.slice_fraction(a, b), held_out


def _windows(recs: list[Recording], spec, hop: int) -> np.ndarray:
    parts = [sliding_windows(r.signal, spec.window, hop) for r in recs]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty((0, spec.window, len(spec.channels)))
    return np.concatenate(parts)


def _check_recordings(normal: list[Recording], spec: VibrationFeatureSpec) -> None:
    if not normal:
        raise DataError("training needs at least one normal recording")
    for r in normal:
        if r.label not in ("normal", "unknown"):
            raise DataError(f"{r.source} is labelled {r.label!r}; train on normal recordings only")
        if r.sample_rate != spec.sample_rate:
            raise DataError(
                f"{r.source} is sampled at {r.sample_rate:g} Hz but the features expect {spec.sample_rate:g} Hz; "
                "resample it explicitly or choose a spec with its rate"
            )
        if r.channels != spec.channels:
            raise DataError(f"{r.source} has channels {list(r.channels)}; the features expect {list(spec.channels)}")


def train_vibration(
    normal: list[Recording], feature_spec: VibrationFeatureSpec, cfg: VibrationTrainConfig, out_dir: Path
) -> TrainedVibrationModel:
    """Train the chosen autoencoder and the Isolation Forest baseline; calibrate the threshold."""
    cfg.check()
    _check_recordings(normal, feature_spec)
    splits = [split_recording(r, cfg) for r in normal]
    train_recs = [s[0] for s in splits]
    calib_recs = [s[1] for s in splits]
    train_hop = cfg.train_hop or max(1, feature_spec.window // 8)

    if cfg.model == "dense":
        preprocessing = feature_spec
    else:
        frame_dim = cfg.lstm_frame
        preprocessing = VibrationFrameSpec(
            sample_rate=feature_spec.sample_rate,
            channels=feature_spec.channels,
            window=feature_spec.window,
            hop=feature_spec.hop,
            frame=frame_dim,
            representation=cfg.lstm_input,
            bands=cfg.lstm_bands,
            fmax=feature_spec.spectral_fmax if cfg.lstm_input == "log_spectrum" else None,
        )
    pre = make_preprocessor(preprocessing)
    features = make_preprocessor(feature_spec)

    train_windows = _windows(train_recs, feature_spec, train_hop)
    calib_windows = _windows(calib_recs, feature_spec, feature_spec.hop)
    if len(train_windows) < 20:
        raise DataError(
            f"only {len(train_windows)} training windows of {feature_spec.window} samples; "
            "give longer normal recordings or a shorter window"
        )
    # Validation for early stopping: the time-ordered tail of the training windows.
    n_val = max(4, int(len(train_windows) * cfg.validation_share))
    x_all = pre(train_windows)
    x_train, x_val = x_all[:-n_val], x_all[-n_val:]
    x_calib = pre(calib_windows)
    log.info(
        "training %s on %d windows (%d validation), calibrating on %d windows",
        cfg.model, len(x_train), len(x_val), len(x_calib),
    )

    if cfg.model == "dense":
        module = FeatureAutoencoder(x_train.mean(axis=0), x_train.std(axis=0), hidden=cfg.dense_hidden)
        detail_names = list(pre.names)
    else:
        flat = x_train.reshape(-1, x_train.shape[2]).astype(np.float64)
        if cfg.lstm_input == "samples":
            mean = np.zeros(flat.shape[1])
            std = np.full(flat.shape[1], np.sqrt(np.mean(flat**2)) or 1.0)
        else:
            mean, std = flat.mean(axis=0), flat.std(axis=0)
        module = FrameLstmAutoencoder(mean, std, steps=x_train.shape[1], hidden=cfg.lstm_hidden, latent=cfg.lstm_latent)
        detail_names = list(pre.names)

    fit_result = fit(module, x_train, x_val, cfg.fit, out_dir, title=f"{cfg.model} autoencoder")
    with torch.no_grad():
        calib_scores = module(torch.as_tensor(x_calib))[0].numpy().astype(np.float64)
    threshold, stats = calibrate_threshold(calib_scores, cfg.rule)
    log.info("threshold %.6g from %d calibration windows (median %.4g, q99 %.4g)", threshold, stats.n, stats.median, stats.q99)

    baseline_train = features(train_windows)
    baseline_onnx, baseline_params = fit_isolation_forest(baseline_train, seed=cfg.fit.seed)

    data = []
    for rec, (tr, ca, ho) in zip(normal, splits):
        digest = recording_sha256(rec)
        for part, name in ((tr, "train"), (ca, "calibration"), (ho, "held_out")):
            data.append(
                DataRecord(source=part.source, label=rec.label, sample_rate=rec.sample_rate,
                           n_samples=part.n_samples, sha256=digest, split=name)
            )
    fingerprint = hashlib.sha256("".join(sorted({d.sha256 for d in data})).encode()).hexdigest()
    split = {
        "rule": "each normal recording split in time: train, calibration, held-out",
        "train_fraction": cfg.train_fraction,
        "calibration_fraction": cfg.calibration_fraction,
        "validation_share_of_train": cfg.validation_share,
        "train_hop": train_hop,
        "n_train_windows": int(len(x_train)),
        "n_validation_windows": int(len(x_val)),
        "n_calibration_windows": int(len(x_calib)),
    }
    return TrainedVibrationModel(
        module=module, preprocessing=preprocessing, feature_spec=feature_spec, config=cfg,
        calibration_inputs=x_calib, calibration_scores=calib_scores, threshold=threshold, stats=stats,
        fit_result=fit_result, detail_names=detail_names, baseline_onnx=baseline_onnx,
        baseline_params=baseline_params, baseline_calibration_features=features(calib_windows),
        data=data, fingerprint=fingerprint, split=split,
    )
