"""The training loop for score-returning models: early stopping, progress, learning curves."""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    epochs: int = 200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    patience: int = 25
    seed: int = 0
    log_every: int = 10


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("inf")
    seconds: float = 0.0
    curve_csv: Path | None = None
    curve_png: Path | None = None


def fit(model: torch.nn.Module, train: np.ndarray, val: np.ndarray, cfg: FitConfig, out_dir: Path, title: str) -> FitResult:
    """Minimise the mean anomaly score of normal data; keep the weights of the best validation epoch.

    The learning curves (CSV and PNG) are written to ``out_dir`` whatever happens, also when
    training is interrupted, so a run can always be looked at.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x_train = torch.as_tensor(train, dtype=torch.float32)
    x_val = torch.as_tensor(val, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = FitResult()
    best_state = None
    started = time.perf_counter()
    try:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = rng.permutation(len(x_train))
            total = 0.0
            for i in range(0, len(order), cfg.batch_size):
                batch = x_train[order[i : i + cfg.batch_size]]
                score, _ = model(batch)
                loss = score.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            model.eval()
            with torch.no_grad():
                val_loss = float(model(x_val)[0].mean())
            train_loss = total / len(x_train)
            result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch = val_loss, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if epoch % cfg.log_every == 0 or epoch == 1:
                elapsed = time.perf_counter() - started
                log.info(
                    "%s epoch %d/%d train %.5f val %.5f (best %.5f @%d) %.1fs",
                    title, epoch, cfg.epochs, train_loss, val_loss, result.best_val_loss, result.best_epoch, elapsed,
                )
            if epoch - result.best_epoch >= cfg.patience:
                log.info("%s early stop at epoch %d: no validation gain for %d epochs", title, epoch, cfg.patience)
                break
    finally:
        result.seconds = time.perf_counter() - started
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        result.curve_csv, result.curve_png = write_learning_curves(result.history, out_dir, title)
    return result


def write_learning_curves(history: list[dict], out_dir: Path, title: str) -> tuple[Path, Path | None]:
    """learning_curve.csv always; learning_curve.png where matplotlib is installed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "learning_curve.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_loss"])
        writer.writeheader()
        writer.writerows(history)
    from factoryedge.evaluation.plots import plot_learning_curve

    png = plot_learning_curve(history, out_dir / "learning_curve.png", title)
    return csv_path, png
