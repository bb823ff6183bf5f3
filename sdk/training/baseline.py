"""The shallow baseline every evaluation shows beside the deep models: an Isolation Forest.

It is exported to ONNX (skl2onnx), so it travels in the bundle without pickle and is scored
by the same ONNX Runtime code as the deep model, on the same windows.
"""
from __future__ import annotations

import numpy as np

from factoryedge.errors import missing_dependency

BASELINE_OUTPUT = "scores"


def fit_isolation_forest(features: np.ndarray, seed: int = 0, n_estimators: int = 200) -> tuple[bytes, dict]:
    """Fit on normal feature vectors; returns the ONNX model and its parameters.

    The ONNX output ``scores`` is sklearn's ``decision_function`` (lower = more abnormal);
    the evaluation negates it so that, as for every factoryedge score, higher is anomalous.
    """
    try:
        from skl2onnx import to_onnx
    except ImportError:
        raise missing_dependency("skl2onnx", "train", "the Isolation Forest baseline") from None
    x = np.asarray(features, dtype=np.float32)
    forest = fit_forest(x, seed, n_estimators)
    onx = to_onnx(
        forest,
        x[:1],
        target_opset={"": 18, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString(), {"n_estimators": n_estimators, "seed": seed}


def fit_forest(features: np.ndarray, seed: int = 0, n_estimators: int = 200):
    """The scikit-learn Isolation Forest itself, for studies that score many forests and need
    no ONNX export (its ``decision_function`` is what the exported model computes)."""
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        raise missing_dependency("scikit-learn", "train", "the Isolation Forest baseline") from None
    return IsolationForest(n_estimators=n_estimators, random_state=seed).fit(np.asarray(features, dtype=np.float32))
