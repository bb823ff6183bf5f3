"""Repeated, stratified, grouped cross-validation of the defect classifier at a line-like imbalance.

Labelled inspection sets over-represent defects (the magnetic-tile test set holds 132
defective and 40 good tiles); a line makes perhaps one defect in a hundred parts. So each
repeat uses every good image and a draw of defects that brings the set to
``defects_per_good`` (0.1: one defective per ten good), allocated over the defect types in
proportion to their counts. Successive repeats take successive slices of one seeded
permutation per type, so defects are reused only once a type runs out. The repeat's images
are then split by ``StratifiedGroupKFold`` on the image type (good or the defect type), so
training and evaluation folds both keep the ratio and every type; images of one group
(e.g. the same physical part) never straddle a training and an evaluation fold.

Each training fold fits the classifier from scratch (its threshold from its own inner
folds); the evaluation fold is scored once, at that threshold. Figures are reported per
fold and pooled per repeat (the repeat's folds' out-of-fold scores and decisions together),
as mean and sample standard deviation.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch

from factoryedge.errors import ConfigError, DataError
from factoryedge.evaluation.image_metrics import image_report
from factoryedge.features.image import ImagePreprocessingSpec
from factoryedge.scoring import ScoreRule
from factoryedge.training.defect_classifier import DefectClassifierConfig, build_views, fit_defect_classifier

log = logging.getLogger(__name__)

GOOD = "good"


@dataclass(frozen=True)
class CVConfig:
    """``repeats`` defect draws, each split into ``folds`` folds; ``defects_per_good`` sets the imbalance."""

    folds: int = 5
    repeats: int = 4
    defects_per_good: float = 0.1
    seed: int = 0

    def check(self) -> None:
        if self.folds < 2 or self.repeats < 1:
            raise ConfigError(f"need folds >= 2 and repeats >= 1, got folds={self.folds}, repeats={self.repeats}")
        if not 0 < self.defects_per_good <= 1:
            raise ConfigError(f"defects_per_good {self.defects_per_good} must lie in (0, 1]")


def allocate(counts: dict[str, int], total: int) -> dict[str, int]:
    """``total`` split over types in proportion to ``counts`` (largest remainder), at least one each."""
    if total < len(counts):
        raise ConfigError(f"{total} defects per repeat cannot cover {len(counts)} defect types; lower the imbalance or the types")
    n = sum(counts.values())
    raw = {t: total * c / n for t, c in counts.items()}
    out = {t: max(1, int(np.floor(v))) for t, v in raw.items()}
    for t in sorted(raw, key=lambda t: raw[t] - np.floor(raw[t]), reverse=True):
        if sum(out.values()) >= total:
            break
        out[t] += 1
    return {t: min(v, counts[t]) for t, v in out.items()}


def imbalanced_splits(types, groups, cv: CVConfig) -> list[dict]:
    """Per repeat and fold, the training and evaluation indices into ``types`` (see the module doc)."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv.check()
    types = np.asarray(types)
    groups = np.asarray(groups)
    good = np.nonzero(types == GOOD)[0]
    by_type = {t: np.nonzero(types == t)[0] for t in sorted(set(types.tolist()) - {GOOD})}
    if not by_type or len(good) < cv.folds:
        raise DataError(f"need defective images and at least {cv.folds} good ones; got {len(good)} good, types {sorted(by_type)}")
    per_repeat = allocate({t: len(v) for t, v in by_type.items()}, int(round(len(good) * cv.defects_per_good)))
    rng = np.random.default_rng(cv.seed)
    perms = {t: rng.permutation(v) for t, v in by_type.items()}
    splits = []
    for r in range(cv.repeats):
        chosen = [np.take(perms[t], np.arange(r * n, (r + 1) * n), mode="wrap") for t, n in per_repeat.items()]
        idx = np.concatenate([good] + chosen)
        sgkf = StratifiedGroupKFold(n_splits=cv.folds, shuffle=True, random_state=cv.seed + r)
        with warnings.catch_warnings():
            # A type with fewer images than folds is simply absent from some evaluation
            # folds; the per-type figures say how many folds had it.
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            folds = list(sgkf.split(idx, types[idx], groups[idx]))
        for f, (tr, ev) in enumerate(folds):
            splits.append({"repeat": r, "fold": f, "train": idx[tr], "eval": idx[ev]})
    return splits


def _counts(types: np.ndarray) -> dict:
    n_def, n_good = int(np.sum(types != GOOD)), int(np.sum(types == GOOD))
    return {"good": n_good, "defective": n_def, "defects_per_good": round(n_def / max(1, n_good), 4)}


def _fold_figures(scores: np.ndarray, types: np.ndarray, rule: ScoreRule) -> dict:
    rep = image_report(scores, types.tolist(), rule.threshold, higher_is_anomalous=rule.higher_is_anomalous)
    o = rep["overall"]
    out = {k: o[k] for k in ("auroc", "average_precision", "f1", "precision", "recall")}
    out["false_reject_rate"] = rep["false_reject_rate"]
    pred = rule.is_anomalous(scores)
    out["per_type_recall"] = {t: float(pred[types == t].mean()) for t in sorted(set(types.tolist()) - {GOOD})}
    out["per_type_detected"] = {t: [int(pred[types == t].sum()), int(np.sum(types == t))] for t in out["per_type_recall"]}
    return out


def _mean_sd(rows: list[dict]) -> dict:
    def mean_sd(v: list[float]) -> dict:
        return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0}

    keys = ("auroc", "average_precision", "f1", "precision", "recall", "false_reject_rate")
    out = {k: mean_sd([r[k] for r in rows]) for k in keys}
    kinds = sorted({t for r in rows for t in r["per_type_recall"]})
    out["per_type_recall"] = {}
    for t in kinds:
        v = [r["per_type_recall"][t] for r in rows if t in r["per_type_recall"]]
        out["per_type_recall"][t] = {**mean_sd(v), "n": len(v)}
    return out


def cross_validate(
    images: list[np.ndarray],
    types,
    masks: list[np.ndarray | None] | None,
    groups,
    spec: ImagePreprocessingSpec,
    config: DefectClassifierConfig | None = None,
    cv: CVConfig | None = None,
    on_fold=None,
) -> dict:
    """Run the protocol; ``types`` holds "good" or the defect type of each image, ``groups``
    any hashable per image (images sharing one never straddle training and evaluation).

    Views are built once for the images any repeat uses, so every fold reuses one encoding
    (the frozen trunk does not depend on the fold). ``on_fold(split, trained, scores)`` is
    called after each fold, e.g. to save its learning curves. Returns per-fold figures,
    per-repeat pooled figures, their mean and standard deviation, and the protocol.
    """
    config = config or DefectClassifierConfig()
    cv = cv or CVConfig()
    types = np.asarray(types)
    groups = np.asarray([str(g) for g in groups]) if groups is not None else np.arange(len(types)).astype(str)
    if not len(images) == len(types) == len(groups):
        raise DataError(f"{len(images)} images, {len(types)} types and {len(groups)} groups: give one of each per image")
    masks = [None] * len(images) if masks is None else list(masks)
    t0 = time.perf_counter()
    splits = imbalanced_splits(types, groups, cv)
    used = np.unique(np.concatenate([s["eval"] for s in splits]))
    labels = (types != GOOD).astype(np.int64)
    views = build_views([images[i] for i in used], labels[used], [masks[i] for i in used], spec, config)
    pos = {int(i): k for k, i in enumerate(used)}
    t_views = time.perf_counter() - t0
    log.info("encoded %d views of %d images in %.0f s", config.views * len(used), len(used), t_views)
    folds, pooled = [], {}
    for s in splits:
        tr, ev = [pos[int(i)] for i in s["train"]], [pos[int(i)] for i in s["eval"]]
        trained = fit_defect_classifier(
            [images[i] for i in s["train"]], labels[s["train"]], [masks[i] for i in s["train"]], spec, config, views.subset(tr)
        )
        with torch.no_grad():  # the clean views are the module's encoder output on the preprocessed images
            scores = torch.sigmoid(trained.module.logits_from(views.clean[ev])).numpy().astype(np.float64)
        ev_types = types[s["eval"]]
        row = {"repeat": s["repeat"], "fold": s["fold"], "train": _counts(types[s["train"]]), "eval": _counts(ev_types)}
        rule = ScoreRule(trained.threshold)  # the classifier's score is a defect probability: higher is anomalous
        row.update(_fold_figures(scores, ev_types, rule))
        row.update(threshold=trained.threshold, epochs=trained.info["epochs_chosen"], held_out_train=trained.info["held_out"])
        folds.append(row)
        p = pooled.setdefault(s["repeat"], {"scores": [], "types": [], "pred": []})
        p["scores"].append(scores)
        p["types"].append(ev_types)
        p["pred"].append(rule.is_anomalous(scores))
        log.info(
            "repeat %d fold %d: AUROC %.3f AP %.3f recall %.2f precision %.2f (%d good, %d defective)",
            s["repeat"], s["fold"], row["auroc"], row["average_precision"], row["recall"], row["precision"],
            row["eval"]["good"], row["eval"]["defective"],
        )
        if on_fold is not None:
            on_fold(s, trained, scores)
    repeats = [_pooled(r, p) for r, p in sorted(pooled.items())]
    return {
        "protocol": {
            **asdict(cv),
            "imbalance": f"1 defective per {1 / cv.defects_per_good:g} good in every training and evaluation fold",
            "stratified_by": "image type (good or defect type)",
            "grouped_by": "the groups given (one per image where none)",
            "n_groups": int(len(set(groups.tolist()))),
            "images_used": int(len(used)),
            "threshold": "chosen per training fold from its inner out-of-fold scores; never from the evaluation fold",
        },
        "classifier": {k: v for k, v in asdict(config).items() if k != "augment"} | {"augment": asdict(config.augment)},
        "backbone": trained.info["backbone"],
        "folds": folds,
        "repeats": repeats,
        "summary": {"per_fold": _mean_sd(folds), "per_repeat_pooled": _mean_sd(repeats)},
        "seconds": {"views": round(t_views, 1), "total": round(time.perf_counter() - t0, 1)},
    }


def _pooled(repeat: int, p: dict) -> dict:
    from sklearn.metrics import average_precision_score, roc_auc_score

    s, t, pred = (np.concatenate(p[k]) for k in ("scores", "types", "pred"))
    y = t != GOOD
    tp = int((pred & y).sum())
    out = {
        "repeat": repeat,
        "eval": _counts(t),
        "auroc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "precision": tp / max(1, int(pred.sum())),
        "recall": tp / max(1, int(y.sum())),
        "false_reject_rate": float(pred[~y].mean()),
        "per_type_recall": {k: float(pred[t == k].mean()) for k in sorted(set(t.tolist()) - {GOOD})},
        "per_type_detected": {k: [int(pred[t == k].sum()), int(np.sum(t == k))] for k in sorted(set(t.tolist()) - {GOOD})},
    }
    out["f1"] = 2 * out["precision"] * out["recall"] / max(out["precision"] + out["recall"], 1e-12)
    return out


def format_markdown(result: dict) -> str:
    """The figures as a markdown table: one row per fold, then mean ± sd per fold and per pooled repeat."""
    proto = result["protocol"]
    cols = ("auroc", "average_precision", "f1", "precision", "recall", "false_reject_rate")
    kinds = sorted(result["summary"]["per_fold"]["per_type_recall"])
    head = (["repeat", "fold", "good", "defective", "AUROC", "AP", "F1", "precision", "recall", "false rejects"]
            + [f"recall {k}" for k in kinds])
    lines = [
        f"Defect classifier ({result['backbone']}): {proto['repeats']} repeats x {proto['folds']} folds, "
        f"{proto['imbalance']}; stratified by {proto['stratified_by']}; grouped by {proto['grouped_by']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]

    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    for r in result["folds"]:
        per = [cell(r["per_type_recall"][k]) if k in r["per_type_recall"] else "-" for k in kinds]
        lines.append("| " + " | ".join([str(r["repeat"]), str(r["fold"]), str(r["eval"]["good"]), str(r["eval"]["defective"])]
                                       + [cell(r[c]) for c in cols] + per) + " |")
    for name, key in (("mean ± sd over folds", "per_fold"), ("mean ± sd over pooled repeats", "per_repeat_pooled")):
        s = result["summary"][key]
        per = [f"{s['per_type_recall'][k]['mean']:.3f} ± {s['per_type_recall'][k]['sd']:.3f}" for k in kinds]
        figures = " | ".join(f"{s[c]['mean']:.3f} ± {s[c]['sd']:.3f}" for c in cols)
        lines.append(f"| {name} | | | | {figures} | " + " | ".join(per) + " |")
    return "\n".join(lines) + "\n"
