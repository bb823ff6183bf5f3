"""A trained vibration model to a verified bundle: ONNX, baseline, golden data, manifest."""
from __future__ import annotations

import datetime as dt
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

import factoryedge
from factoryedge.bundle import Bundle, load_bundle, write_bundle
from factoryedge.exporters.onnx_export import OPSET, check_parity, export_onnx, tensor_specs
from factoryedge.manifest import BaselineInfo, Manifest, ModelInfo, Provenance, ScoreInfo, TensorSpec
from factoryedge.scoring import calibrate_threshold
from factoryedge.training.baseline import BASELINE_OUTPUT
from factoryedge.training.vibration import TrainedVibrationModel

log = logging.getLogger(__name__)

N_GOLDEN = 32

SCORE_DEFINITIONS = {
    "feature_autoencoder": "mean squared reconstruction residual of the standardised feature vector",
    "frame_lstm_autoencoder": "mean squared reconstruction residual of the standardised frame sequence, over all steps",
}


def golden_inputs(trained: TrainedVibrationModel, n: int = N_GOLDEN) -> np.ndarray:
    """Calibration windows plus amplified copies, so parity covers both sides of the threshold."""
    x = trained.calibration_inputs
    idx = np.linspace(0, len(x) - 1, num=min(n // 2, len(x))).astype(int)
    normal = x[idx]
    # Shift inputs by a few training standard deviations: a plausible anomaly.
    std = trained.module.std.numpy()
    abnormal = normal + 4.0 * std * np.sign(np.sin(np.arange(std.shape[-1])))
    return np.concatenate([normal, abnormal.astype(np.float32)]).astype(np.float32)


def _calibrate_baseline(trained: TrainedVibrationModel):
    """The baseline's threshold, by the same rule, from its ONNX scores on the calibration windows."""
    import onnxruntime

    session = onnxruntime.InferenceSession(trained.baseline_onnx, providers=["CPUExecutionProvider"])
    (scores,) = session.run([BASELINE_OUTPUT], {"X": trained.baseline_calibration_features.astype(np.float32)})
    return calibrate_threshold(-scores.ravel(), trained.config.rule)


def build_vibration_bundle(
    trained: TrainedVibrationModel, out_dir: str | Path, name: str, version: str = "1.0.0", description: str = ""
) -> Bundle:
    """Export, check parity, and write the bundle; nothing is written if parity fails."""
    module = trained.module.eval()
    golden = golden_inputs(trained)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_onnx(module, golden, onnx_path, output_names=["score", "detail"])
        parity, reference = check_parity(module, onnx_path, golden, trained.threshold)
        inputs, outputs = tensor_specs(onnx_path)
        golden_buf = io.BytesIO()
        np.savez_compressed(golden_buf, input=golden, **{f"output_{k}": v for k, v in reference.items()})

        baseline_threshold, baseline_stats = _calibrate_baseline(trained)
        n_feat = trained.baseline_calibration_features.shape[1]
        baseline = BaselineInfo(
            architecture="isolation_forest",
            file="baseline.onnx",
            inputs=[TensorSpec(name="X", shape=["batch", n_feat])],
            outputs=[TensorSpec(name=BASELINE_OUTPUT, shape=["batch", 1])],
            score_output=BASELINE_OUTPUT,
            negate=True,
            threshold=baseline_threshold,
            calibration=baseline_stats,
            preprocessing=trained.feature_spec,
            parameters=trained.baseline_params,
        )
        arch = type(module).architecture
        fr = trained.fit_result
        manifest = Manifest(
            name=name,
            version=version,
            kind="vibration",
            description=description,
            model=ModelInfo(architecture=arch, opset=OPSET, inputs=inputs, outputs=outputs, parameters=module.hparams),
            preprocessing=trained.preprocessing,
            score=ScoreInfo(
                definition=SCORE_DEFINITIONS[arch],
                threshold=trained.threshold,
                rule=trained.config.rule,
                calibration=trained.stats,
                detail_output="detail",
                detail_names=trained.detail_names,
            ),
            parity=parity,
            baseline=baseline,
            provenance=Provenance(
                created_utc=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                factoryedge_version=factoryedge.__version__,
                framework=f"torch {torch.__version__}",
                data=trained.data,
                data_fingerprint=trained.fingerprint,
                split=trained.split,
                training={
                    "epochs_run": len(fr.history),
                    "best_epoch": fr.best_epoch,
                    "best_val_loss": fr.best_val_loss,
                    "final_train_loss": fr.history[-1]["train_loss"] if fr.history else None,
                    "seconds": round(fr.seconds, 2),
                    "config": {k: v for k, v in vars(trained.config.fit).items()},
                },
            ),
        )
        files = {"model.onnx": onnx_path, "golden.npz": golden_buf.getvalue(), "baseline.onnx": trained.baseline_onnx}
        if fr.curve_csv:
            files["reports/learning_curve.csv"] = fr.curve_csv
        if fr.curve_png:
            files["reports/learning_curve.png"] = fr.curve_png
        write_bundle(out_dir, manifest, files)
    return load_bundle(out_dir)
