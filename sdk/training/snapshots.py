"""Training the dense autoencoder and the Isolation Forest on snapshot recordings' commissioning periods.

Only the commissioning bursts of each run are used (``Commissioning``: after the run-in skip,
for the stated duration), windowed burst by burst. Per run, the first two thirds of those
windows train (the last fifth of them validates for early stopping) and the last third
calibrates the threshold, in time order: neighbouring snapshots are alike, so a shuffled split
would calibrate on near-copies of training data and set the threshold too low.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from factoryedge.data.snapshots import SnapshotRecording, snapshots_sha256
from factoryedge.errors import DataError
from factoryedge.evaluation.run_to_failure import Commissioning
from factoryedge.features import make_preprocessor
from factoryedge.features.vibration import VibrationFeatureSpec
from factoryedge.manifest import DataRecord
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.baseline import fit_isolation_forest
from factoryedge.training.models import FeatureAutoencoder, FrameLstmAutoencoder
from factoryedge.training.trainer import FitConfig, fit
from factoryedge.training.vibration import TrainedVibrationModel, VibrationTrainConfig

log = logging.getLogger(__name__)

CALIBRATION_SHARE = 1 / 3
# An LSTM needs more updates than one batch per epoch of ~40 sequences gives it.
RECURRENT_FIT = FitConfig(epochs=300, patience=40, batch_size=16, log_every=1000)


def commissioning_windows(rec: SnapshotRecording, spec: VibrationFeatureSpec, comm: Commissioning):
    """(train windows, calibration windows) of one run's commissioning period, in time order."""
    if rec.sample_rate != spec.sample_rate or rec.channels != spec.channels:
        raise DataError(f"{rec.source}: {rec.sample_rate:g} Hz, channels {list(rec.channels)}; the features expect "
                        f"{spec.sample_rate:g} Hz, channels {list(spec.channels)}")
    w, _, starts = rec.windows(spec.window, spec.hop)
    w = w[comm.mask(starts)]
    n_cal = int(round(len(w) * CALIBRATION_SHARE))
    if len(w) - n_cal < 20 or n_cal < 20:
        raise DataError(f"{rec.source}: {len(w)} windows in commissioning ({comm.skip_s:g} s + {comm.duration_s:g} s); "
                        "at least 60 are needed: commission longer or use a smaller hop")
    return w[: len(w) - n_cal], w[len(w) - n_cal:]


def train_on_snapshots(recs: list[SnapshotRecording], spec: VibrationFeatureSpec, comm: Commissioning,
                       cfg: VibrationTrainConfig, out_dir: Path, baseline: bool = True) -> TrainedVibrationModel:
    """The dense autoencoder and the Isolation Forest on the runs' commissioning periods, ready to export.

    ``baseline=False`` leaves the forest out (``baseline_onnx`` is None): its ONNX conversion
    takes most of the time, and studies fit their own with ``fit_forest``.
    """
    if not recs:
        raise DataError("training needs at least one snapshot recording")
    if cfg.model != "dense":
        raise DataError(f"snapshot recordings train the dense model only, not {cfg.model!r}")
    pre = make_preprocessor(spec)
    parts = [commissioning_windows(r, spec, comm) for r in recs]
    x_tr, x_val, x_cal = [], [], []
    for train_w, cal_w in parts:
        x = pre(train_w)
        n_val = max(4, int(len(x) * cfg.validation_share))
        x_tr.append(x[:-n_val])
        x_val.append(x[-n_val:])
        x_cal.append(pre(cal_w))
    x_train, x_valid, x_calib = np.concatenate(x_tr), np.concatenate(x_val), np.concatenate(x_cal)
    log.info("training dense autoencoder on %d commissioning windows of %d run(s) (%d validation, %d calibration)",
             len(x_train), len(recs), len(x_valid), len(x_calib))
    module = FeatureAutoencoder(x_train.mean(axis=0), x_train.std(axis=0), hidden=cfg.dense_hidden)
    fit_result = fit(module, x_train, x_valid, cfg.fit, out_dir, title="dense autoencoder")
    with torch.no_grad():
        calib_scores = module(torch.as_tensor(x_calib))[0].numpy().astype(np.float64)
    threshold, stats = calibrate_threshold(calib_scores, cfg.rule)
    baseline_onnx, baseline_params = (fit_isolation_forest(np.concatenate([x_train, x_valid]), seed=cfg.fit.seed)
                                      if baseline else (None, {}))
    data = []
    for rec, (train_w, cal_w) in zip(recs, parts):
        digest = snapshots_sha256(rec)
        for name, w in (("train", train_w), ("calibration", cal_w)):
            data.append(DataRecord(source=rec.source, label=rec.label, sample_rate=rec.sample_rate,
                                   n_samples=int(len(w) * spec.window), sha256=digest, split=name))
    fingerprint = hashlib.sha256("".join(sorted({d.sha256 for d in data})).encode()).hexdigest()
    split = {"rule": "each run's commissioning period (skip_s, duration_s), windowed per burst; first 2/3 train, "
                     "last 1/3 calibrate, in time order",
             "commissioning": {"skip_s": comm.skip_s, "duration_s": comm.duration_s},
             "n_train_windows": int(len(x_train)), "n_validation_windows": int(len(x_valid)),
             "n_calibration_windows": int(len(x_calib))}
    return TrainedVibrationModel(
        module=module, preprocessing=spec, feature_spec=spec, config=cfg, calibration_inputs=x_calib,
        calibration_scores=calib_scores, threshold=threshold, stats=stats, fit_result=fit_result,
        detail_names=list(pre.names), baseline_onnx=baseline_onnx, baseline_params=baseline_params,
        baseline_calibration_features=x_calib, data=data, fingerprint=fingerprint, split=split)


# -- the recurrent autoencoder over the sequence of recent snapshots -----------------------

def burst_features(x: np.ndarray, burst: np.ndarray, n_bursts: int) -> np.ndarray:
    """One feature vector per burst: the mean over its windows (``burst`` maps window -> burst)."""
    out = np.zeros((n_bursts, x.shape[1]), dtype=np.float64)
    np.add.at(out, burst, x)
    counts = np.bincount(burst, minlength=n_bursts)
    return (out / np.maximum(counts, 1)[:, None]).astype(np.float32)


def snapshot_sequences(f: np.ndarray, steps: int) -> np.ndarray:
    """(n_bursts, steps, features): for each burst, the features of it and the ``steps - 1``
    bursts before it. The first bursts repeat the first one where history is missing, so every
    burst has a score; they fall in the run-in skip, before commissioning starts."""
    if steps < 1:
        raise DataError(f"sequence steps={steps!r} must be at least 1 burst")
    padded = np.concatenate([np.repeat(f[:1], steps - 1, axis=0), f])
    view = np.lib.stride_tricks.sliding_window_view(padded, steps, axis=0)  # (n, features, steps)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def train_sequence_autoencoder(f: np.ndarray, t_s: np.ndarray, comm: Commissioning, steps: int, fit_cfg,
                               out_dir: Path, hidden: int = 32, latent: int = 8):
    """The seed's recurrent autoencoder, over the sequence of the last ``steps`` snapshots'
    features (where trends live), trained on sequences that *end* in the commissioning period.

    Split in time order as the dense model's: first 2/3 train, last 1/3 calibrate. Every fifth
    training sequence validates for early stopping: neighbouring sequences share all but one
    snapshot, so this measures how well the network has fitted, not how it generalises over
    time (a held-out *later* stretch would stop training at once whenever commissioning holds
    a slow drift). Generalisation over time is what the later calibration third measures.
    Returns (module, calibration scores, fit result).
    """

    seq = snapshot_sequences(f, steps)[comm.mask(t_s)]
    n_cal = int(round(len(seq) * CALIBRATION_SHARE))
    if len(seq) - n_cal < 20 or n_cal < 20:
        raise DataError(f"{len(seq)} snapshots in commissioning ({comm.skip_s:g} s + {comm.duration_s:g} s); at least "
                        "60 are needed for the recurrent autoencoder: commission longer")
    train, calib = seq[: len(seq) - n_cal], seq[len(seq) - n_cal:]
    is_val = np.arange(len(train)) % 5 == 4
    flat = train[:, -1, :]  # each snapshot once
    module = FrameLstmAutoencoder(flat.mean(axis=0), flat.std(axis=0), steps=steps, hidden=hidden, latent=latent)
    fit_result = fit(module, train[~is_val], train[is_val], fit_cfg, out_dir, title="recurrent autoencoder")
    with torch.no_grad():
        calib_scores = module(torch.as_tensor(calib))[0].numpy().astype(np.float64)
    return module, calib_scores, fit_result


def sequence_scores(module, f: np.ndarray, steps: int, batch: int = 512) -> np.ndarray:
    """The recurrent autoencoder's score for every burst (its sequence ends at that burst)."""
    seq = snapshot_sequences(f, steps)
    out = []
    with torch.no_grad():
        for i in range(0, len(seq), batch):
            out.append(module(torch.as_tensor(seq[i: i + batch]))[0].numpy())
    return np.concatenate(out).astype(np.float64)
