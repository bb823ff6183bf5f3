"""Pictures a person looks at: learning curves, score histograms, ROC curves, score timelines.

matplotlib is imported lazily with the Agg backend (no display on a device or in CI). Where
it is not installed the functions log that and return None instead of failing a run whose
numbers are already written.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed; skipping plots (pip install 'factoryedge[train]')")
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history: list[dict], path: Path, title: str) -> Path | None:
    plt = _pyplot()
    if plt is None or not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], label="validation (normal)")
    best = min(history, key=lambda h: h["val_loss"])
    ax.axvline(best["epoch"], color="grey", linestyle=":", label=f"best epoch {best['epoch']}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean anomaly score (loss)")
    ax.set_title(f"Learning curve: {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def classifier_curve_png(history: list[dict], title: str) -> bytes | None:
    """The defect classifier's losses and out-of-fold AUROC per epoch as PNG bytes; None without matplotlib."""
    import io

    plt = _pyplot()
    if plt is None:
        return None
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ep, [h["train_loss"] for h in history], label="train (inner folds, weighted)")
    ax.plot(ep, [h["val_loss"] for h in history], label="validation (inner folds, class-balanced)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("binary cross-entropy")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_auroc"] for h in history], color="green", linestyle="--", label="out-of-fold AUROC")
    ax2.set_ylim(0.5, 1.0)
    ax2.set_ylabel("AUROC")
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    ax.axvline(best, color="grey", linestyle=":", label=f"chosen epochs {best}")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8)
    ax.set_title(f"Defect classifier: {title}", fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def plot_scores(
    scores: dict[str, np.ndarray], threshold: float, roc: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, title: str
) -> Path | None:
    """Score histogram per class with the threshold, next to the ROC curve per class vs normal."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, (ax_h, ax_r) = plt.subplots(1, 2, figsize=(12, 4.5))
    finite = np.concatenate([s for s in scores.values() if len(s)])
    lo, hi = np.quantile(finite, 0.001), np.quantile(finite, 0.999)
    bins = np.geomspace(max(lo, 1e-9), max(hi, lo * 10, 1e-8), 60) if lo > 0 else 60
    for label, s in scores.items():
        ax_h.hist(s, bins=bins, alpha=0.55, label=f"{label} (n={len(s)})")
    if lo > 0:
        ax_h.set_xscale("log")
    ax_h.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3g}")
    ax_h.set_xlabel("anomaly score")
    ax_h.set_ylabel("windows")
    ax_h.legend(fontsize=8)
    ax_h.set_title("Score distribution")
    for label, (fpr, tpr, auc) in roc.items():
        ax_r.plot(fpr, tpr, label=f"{label} (AUROC {auc:.3f})")
    ax_r.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax_r.set_xlabel("false-alarm rate (normal windows)")
    ax_r.set_ylabel("detection rate")
    ax_r.legend(fontsize=8)
    ax_r.set_title("ROC vs normal")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeline(items, threshold: float, path: Path, title: str) -> Path | None:
    """Anomaly score over time for each recording, with the threshold: what an operator watches."""
    plt = _pyplot()
    if plt is None or not items:
        return None
    n = len(items)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.6 * n + 0.6), sharex=False, squeeze=False)
    for ax, it in zip(axes[:, 0], items):
        ax.plot(it.start_s, it.model, lw=1)
        ax.axhline(threshold, color="red", linestyle="--", lw=1)
        if len(it.model) and np.min(it.model) > 0:
            ax.set_yscale("log")
        ax.set_ylabel("score", fontsize=8)
        ax.set_title(f"{it.label}: {it.source}", fontsize=8, loc="left")
    axes[-1, 0].set_xlabel("time in recording (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
