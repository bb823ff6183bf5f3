"""Supervised defect classifier for lines with labelled defects, built for heavy class imbalance.

Model: a feature trunk on the stride-16 grid, then a head of 1x1 convolutions that gives each
cell a defect logit; the image logit is their log-sum-exp pool (a soft maximum, so one pore
in one cell can carry the image), and the exported module returns
``(score, heatmap)``: the defect probability (N,) and each cell's probability (N, h, w), the
class-activation map the score is pooled from. The trunk is the ImageNet EfficientNet-Lite0
(stages 3-5: stage 3 max-pooled to stride 16, 232 channels), frozen, where its wheels are
installed; otherwise (or with ``pretrained=False``) a small CNN trained from scratch.

Masks, where given, also supervise the cells directly (mixed supervision, as in Tabernik et
al., "Segmentation-based deep-learning approach for surface-defect detection", 2019).

Imbalance: a ``WeightedRandomSampler`` oversamples defects to ``oversample_to`` of the drawn
samples, and the loss weights the remaining imbalance away (positive weight
(1 - p) / p), so both classes weigh the same in every epoch. Augmented views (defect-keeping
crops, flips, rot90, gamma and noise) are drawn once per
image and encoded once: with a frozen trunk only the head trains, which is what fits a
CPU budget. The threshold and the epoch count come from out-of-fold scores of an inner
stratified split of the training images; the evaluation data never sees either.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import WeightedRandomSampler

from factoryedge.errors import ConfigError, DataError
from factoryedge.evaluation.plots import classifier_curve_png
from factoryedge.features.image import ImagePreprocessingSpec, ImagePreprocessor
from factoryedge.scoring import ScoreRule, budget_threshold, score_stats
from factoryedge.training.classifier_net import (
    ARCHITECTURES,
    GRID_STRIDE,
    CellHead,
    DefectClassifierNet,
    lse_pool,
    make_encoder,
    small_cnn,
)
from factoryedge.training.image_augment import AugmentConfig, augment, cell_targets
from factoryedge.training.image_common import TrainedImageModel

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DefectClassifierConfig:
    """Hyper-parameters. ``pretrained`` "auto" uses EfficientNet-Lite0 where installed, else
    the small CNN (with a warning); True insists on it. ``views`` counts the unaugmented view
    too. ``oversample_to`` None disables oversampling (the loss weight then carries the whole
    imbalance); ``class_weighting`` False leaves the drawn imbalance in the loss.
    ``cell_weight`` adds a per-cell loss where masks exist (cells the mask touches are
    defects, good images' cells are not), which gives the head far more labels than one
    per image; 0 trains on image labels alone. ``kernel`` is the head's first convolution
    (1: each cell on its own; 3: with its neighbours).
    ``threshold_rule`` "max_f1" takes the out-of-fold F1 optimum, "recall" the highest
    threshold that keeps out-of-fold recall at ``target_recall``, "false_reject" the
    lowest that rejects at most ``max_false_reject`` of the out-of-fold good scores (the
    anomaly detectors' operating point, so both can be compared at one budget)."""

    pretrained: bool | Literal["auto"] = "auto"
    hidden: int = 64
    kernel: int = 1
    dropout: float = 0.2
    sharpness: float = 5.0
    views: int = 6
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-3
    oversample_to: float | None = 0.3
    cell_weight: float = 1.0
    class_weighting: bool = True
    calibration_folds: int = 3
    threshold_rule: Literal["max_f1", "recall", "false_reject"] = "max_f1"
    target_recall: float = 0.9
    max_false_reject: float = 0.01
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0

    def check(self) -> None:
        if self.oversample_to is not None and not 0 < self.oversample_to < 1:
            raise ConfigError(f"oversample_to {self.oversample_to} must lie in (0, 1) or be None")
        for name in ("views", "epochs", "batch_size", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)} must be at least 1")
        if self.calibration_folds < 2:
            raise ConfigError(f"calibration_folds {self.calibration_folds} must be at least 2")
        if self.threshold_rule not in ("max_f1", "recall", "false_reject") or not 0 < self.target_recall <= 1:
            raise ConfigError(f"threshold_rule {self.threshold_rule!r} / target_recall {self.target_recall} invalid")
        if not 0 < self.max_false_reject < 1:
            raise ConfigError(f"max_false_reject {self.max_false_reject} must lie in (0, 1)")


@dataclass
class ViewSet:
    """Encoded views of labelled images: ``clean`` (n, C, h, w) float32 from the unaugmented
    images, ``augmented`` (n, V - 1, C, h, w) float16. With a frozen trunk the encoding is its
    features; for the small CNN it is the preprocessed input itself. ``cells`` (n, V, h, w)
    are each view's cell targets: 1 where the (transformed) mask touches the cell, 0 on good
    images, NaN where a defect has no mask."""

    clean: torch.Tensor
    augmented: torch.Tensor
    cells: torch.Tensor
    labels: np.ndarray
    pretrained: bool

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ViewSet:
        idx = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return ViewSet(self.clean[idx], self.augmented[idx], self.cells[idx], self.labels[idx.numpy()], self.pretrained)

    def draw(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One random view (clean included) per index, with its cell targets."""
        v = rng.integers(0, self.augmented.shape[1] + 1, size=len(idx))
        out = self.clean[idx].clone()
        aug = v > 0
        if aug.any():
            out[aug] = self.augmented[idx[aug], v[aug] - 1].float()
        return out, self.cells[idx, v].float()


def check_inputs(images, labels, masks, spec: ImagePreprocessingSpec, min_per_class: int = 2) -> tuple[np.ndarray, list]:
    """Validated (labels as int 0/1, masks list); raises DataError / ConfigError naming the problem."""
    if spec.resize != "fixed" or spec.tile is not None or spec.margin:
        raise ConfigError(
            f"the defect classifier needs resize 'fixed', no tiles and no margin; got resize={spec.resize!r}, "
            f"tile={spec.tile}, margin={spec.margin}"
        )
    if any(int(s) % GRID_STRIDE for s in spec.size):
        raise ConfigError(f"fixed size {spec.size} must be a multiple of {GRID_STRIDE} (the model's grid stride)")
    masks = [None] * len(images) if masks is None else list(masks)
    if not len(images) == len(labels) == len(masks):
        raise DataError(f"{len(images)} images, {len(labels)} labels and {len(masks)} masks: give one of each per image")
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0 (good) or 1 (defect); got values {sorted(set(np.ravel(y).tolist()))[:5]}")
    y = y.astype(np.int64)
    for name, n in (("defective", int(y.sum())), ("good", int(len(y) - y.sum()))):
        if n < min_per_class:
            raise DataError(f"the classifier needs at least {min_per_class} {name} images (one per calibration fold), got {n}")
    for i, (img, m) in enumerate(zip(images, masks)):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise DataError(f"image {i} must be a uint8 array (H, W) or (H, W, C), got {getattr(img, 'dtype', type(img))}")
        if m is None:
            continue
        m = np.asarray(m)
        if m.shape != img.shape[:2]:
            raise DataError(f"mask {i} has shape {m.shape} but its image {img.shape[:2]}; masks must match their image")
        if y[i] == 0 and m.any():
            raise DataError(f"image {i} is labelled good but its mask marks {int(m.sum())} defect pixels")
        if y[i] == 1 and not m.any():
            raise DataError(f"defective image {i} has an empty mask; pass None where no mask exists")
    return y, [None if m is None else np.asarray(m, dtype=bool) for m in masks]


def build_views(images, labels, masks, spec: ImagePreprocessingSpec, config: DefectClassifierConfig, encoder=None) -> ViewSet:
    """Draw ``config.views`` views per image (view 0 unaugmented) and encode them once.

    Costs one trunk pass per view: about 35 ms per 256 x 256 view on one core for
    EfficientNet-Lite0. Pass the result to ``fit_defect_classifier`` (or a subset of it to
    several fits, as cross-validation does) to pay that once.
    """
    config.check()
    y, masks = check_inputs(images, labels, masks, spec, min_per_class=1)
    if encoder is None:
        encoder = make_encoder(config.pretrained)[0]
    pretrained = not isinstance(encoder, nn.Identity)
    pre, rng = ImagePreprocessor(spec), np.random.default_rng(config.seed)
    grid = tuple(int(n) // GRID_STRIDE for n in spec.size)
    clean, aug, cells = [], [], []
    with torch.no_grad():
        for img, m, label in zip(images, masks, y):
            views = [(img, m)] + [augment(img, m, bool(label), rng, config.augment) for _ in range(config.views - 1)]
            enc = encoder(torch.from_numpy(np.concatenate([pre(v) for v, _ in views])))
            clean.append(enc[0])
            aug.append(enc[1:].half())
            cells.append(np.stack([cell_targets(vm, bool(label), grid) for _, vm in views]))
    return ViewSet(torch.stack(clean), torch.stack(aug), torch.from_numpy(np.stack(cells)).half(), y, pretrained)


def balanced_sampler(labels: np.ndarray, oversample_to: float | None, seed: int) -> tuple[WeightedRandomSampler, float]:
    """An epoch's draws (as many as samples, with replacement) and the expected positive share."""
    pos = labels == 1
    if oversample_to is None:
        w, share = np.ones(len(labels)), float(pos.mean())
    else:
        w, share = np.where(pos, oversample_to / pos.sum(), (1 - oversample_to) / (~pos).sum()), float(oversample_to)
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(torch.as_tensor(w), num_samples=len(labels), replacement=True, generator=gen), share


def positive_weight(labels: np.ndarray, config: DefectClassifierConfig) -> float:
    """The loss weight of a defect: (1 - p) / p for the drawn positive share p, or 1 when unweighted."""
    if not config.class_weighting:
        return 1.0
    p = config.oversample_to if config.oversample_to is not None else float(np.mean(labels == 1))
    return (1 - p) / p


def balanced_bce(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Mean of the per-class mean BCE: a validation loss that does not drift with the class mix."""
    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    return float(sum(loss[y == c].mean() for c in (0, 1) if (y == c).any()) / len({int(v) for v in y.tolist()}))


def train_model(views: ViewSet, val: ViewSet | None, config: DefectClassifierConfig, epochs: int, seed: int):
    """Train head (and small CNN) for ``epochs``; returns (net, history, val probabilities per epoch)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    y = views.labels
    if views.pretrained:
        flat = views.clean.transpose(0, 1).flatten(1)
        head = CellHead(flat.shape[0], config.hidden, config.dropout, flat.mean(1), flat.std(1).clamp_min(1e-3), config.kernel)
        trainable: nn.Module = nn.Identity()
    else:
        trainable = small_cnn()
        head = CellHead(trainable[-2].num_features, config.hidden, config.dropout, kernel=config.kernel)
    net = DefectClassifierNet(nn.Identity(), trainable, head, config.sharpness)
    sampler, _ = balanced_sampler(y, config.oversample_to, seed)
    pos_weight = torch.tensor(positive_weight(y, config))
    # Defect cells are rare even among defective images; weight them by the square root of
    # their imbalance, so they count without turning loosely outlined masks into the rule.
    known = views.cells[~torch.isnan(views.cells)].float()
    cell_pos_weight = torch.tensor(float(np.sqrt(max(1.0, (known == 0).sum().item() / max(1.0, known.sum().item())))))
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=config.lr, weight_decay=config.weight_decay)
    yt = torch.as_tensor(y, dtype=torch.float32)
    history, val_probs = [], []
    for epoch in range(1, epochs + 1):
        net.train()
        draws, total = np.fromiter(sampler, dtype=np.int64), 0.0
        for i in range(0, len(draws), config.batch_size):
            b = draws[i : i + config.batch_size]
            if len(b) < 2 and not views.pretrained:
                continue  # batch norm cannot train on one sample
            x, targets = views.draw(b, rng)
            cells = net.cells_from(x)
            loss = F.binary_cross_entropy_with_logits(lse_pool(cells, net.sharpness), yt[b], pos_weight=pos_weight)
            known = ~torch.isnan(targets)
            if config.cell_weight > 0 and known.any():
                cell_loss = F.binary_cross_entropy_with_logits(cells[known], targets[known], pos_weight=cell_pos_weight)
                loss = loss + config.cell_weight * cell_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        row = {"epoch": epoch, "train_loss": total / len(draws)}
        if val is not None:
            net.eval()
            with torch.no_grad():
                logits = net.logits_from(val.clean)
            row["val_loss"] = balanced_bce(logits, torch.as_tensor(val.labels, dtype=torch.float32))
            val_probs.append(torch.sigmoid(logits).numpy())
        history.append(row)
    net.eval()
    return net, history, val_probs


def choose_threshold(scores: np.ndarray, labels: np.ndarray, rule: str, target_recall: float,
                     max_false_reject: float = 0.01) -> float:
    """Operating point on held-out scores; a part is rejected when its score is >= the threshold.

    The threshold sits halfway between the chosen score and the next lower one, so scores
    a little below the held-out defect's still reject. "false_reject" uses the good scores
    alone (``budget_threshold``, as the anomaly detectors do).
    """
    from sklearn.metrics import precision_recall_curve

    if rule == "false_reject":
        return budget_threshold(scores[labels == 0], max_false_reject, source="out-of-fold good images")[0]

    prec, rec, thr = precision_recall_curve(labels, scores)
    prec, rec = prec[:-1], rec[:-1]
    if rule == "max_f1":
        f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)
        t = float(thr[int(np.argmax(f1))])
    else:
        t = float(thr[np.nonzero(rec >= target_recall)[0].max()])
    lower = scores[scores < t]
    return float((t + lower.max()) / 2) if lower.size else t


def fit_defect_classifier(
    images: list[np.ndarray],
    labels,
    masks: list[np.ndarray | None] | None,
    spec: ImagePreprocessingSpec,
    config: DefectClassifierConfig | None = None,
    views: ViewSet | None = None,
) -> TrainedImageModel:
    """Fit on labelled uint8 frames (1 = defect); ``masks`` (bool, image-sized, or None each)
    let crops keep the defect in view. ``views`` from ``build_views`` on the same images
    skips the encoding.

    ``config.calibration_folds`` stratified inner folds each train a model; their mean
    validation loss picks the epoch count, and their out-of-fold scores at that epoch give
    the threshold (``config.threshold_rule``) and the good-score calibration. The final
    model trains on all images for that many epochs. Learning curves (inner folds' mean
    train and validation loss, out-of-fold AUROC per epoch) land in ``curves``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    config = config or DefectClassifierConfig()
    config.check()
    t0 = time.perf_counter()
    y, masks = check_inputs(images, labels, masks, spec, config.calibration_folds)
    encoder, note = None, None
    if views is None:
        encoder, _, note = make_encoder(config.pretrained)
        views = build_views(images, y, masks, spec, config, encoder)
    elif len(views) != len(images) or not np.array_equal(views.labels, y):
        raise DataError(f"views hold {len(views)} images with other labels than the {len(images)} given; "
                        "build them from these images")
    t_views = time.perf_counter() - t0

    folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=config.seed).split(y, y)
    oof = np.zeros((config.epochs, len(y)))
    inner = []
    for k, (tr, va) in enumerate(folds):
        _, hist, probs = train_model(views.subset(tr), views.subset(va), config, config.epochs, config.seed + 1 + k)
        oof[:, va] = np.stack(probs)
        inner.append(hist)
    history = []
    for e in range(config.epochs):
        history.append({
            "epoch": e + 1,
            "train_loss": float(np.mean([h[e]["train_loss"] for h in inner])),
            "val_loss": float(np.mean([h[e]["val_loss"] for h in inner])),
            "val_auroc": float(roc_auc_score(y, oof[e])),
            "val_ap": float(average_precision_score(y, oof[e])),
        })
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    held = oof[best - 1]
    threshold = choose_threshold(held, y, config.threshold_rule, config.target_recall, config.max_false_reject)
    net, final_hist, _ = train_model(views, None, config, best, config.seed)
    for row, fin in zip(history, final_hist):
        row["final_train_loss"] = fin["train_loss"]
    if encoder is None:
        encoder = make_encoder(True if views.pretrained else False)[0]
    net.encoder = encoder
    net.eval()
    pred = ScoreRule(threshold).is_anomalous(held)  # the score is a defect probability: higher is anomalous
    tp = int((pred & (y == 1)).sum())
    info = {
        "n_images": int(len(y)),
        "n_defective": int(y.sum()),
        "n_good": int(len(y) - y.sum()),
        "backbone": "efficientnet_lite0 (ImageNet, frozen; head only)" if views.pretrained else "small CNN from scratch",
        "backbone_fallback": note,
        "views_per_image": int(views.augmented.shape[1] + 1),
        "oversample_to": config.oversample_to,
        "class_weighting": config.class_weighting,
        "calibration_folds": config.calibration_folds,
        "epochs_chosen": int(best),
        "threshold_rule": {"max_f1": "max_f1", "recall": f"recall>={config.target_recall}",
                           "false_reject": f"false_reject<={config.max_false_reject}"}[config.threshold_rule],
        "held_out": {
            "auroc": float(roc_auc_score(y, held)),
            "average_precision": float(average_precision_score(y, held)),
            "recall": tp / max(int(y.sum()), 1),
            "precision": tp / max(int(pred.sum()), 1),
            "false_reject_rate": float(pred[y == 0].mean()),
        },
        "seconds": {"views": round(t_views, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    good_scores = held[y == 0]
    h, w = (int(s) // GRID_STRIDE for s in spec.size)
    return TrainedImageModel(
        module=net,
        architecture=ARCHITECTURES[views.pretrained],
        spec=spec,
        threshold=threshold,
        rule=None,
        calibration=score_stats(good_scores),
        calibration_scores=good_scores,
        score_definition=(
            "probability that the part is defective: sigmoid of the log-sum-exp pool "
            f"(sharpness {config.sharpness}) of per-cell defect logits; heatmap = per-cell probabilities "
            f"on a {h} x {w} grid of {GRID_STRIDE}-px cells (class-activation map)"
        ),
        parameters={"hidden": config.hidden, "sharpness": config.sharpness, "grid_stride": GRID_STRIDE,
                    "dropout": config.dropout},
        info=info,
        history=history,
        curves=learning_curves(history, info["backbone"]),
    )


def learning_curves(history: list[dict], title: str) -> dict[str, bytes]:
    """learning_curve.csv always; learning_curve.png where matplotlib is installed."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    out = {"learning_curve.csv": buf.getvalue().encode()}
    png = classifier_curve_png(history, title)
    if png is not None:
        out["learning_curve.png"] = png
    return out
