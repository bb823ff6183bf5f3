"""A contact sheet of the parts a model got most wrong, with their anomaly heatmaps overlaid.

Two panels: the worst false accepts (defective parts scored furthest on the normal side of
the threshold: the ones that would ship) and the worst false rejects (good parts scored
furthest on the anomalous side: the ones that would be scrapped). A part is rejected when
``factoryedge.scoring.ScoreRule`` says so, as everywhere in factoryedge: at or above the
threshold, or at or below it for a score where lower is anomalous. Where a model makes no
error of a kind, the panel shows the parts of that kind nearest the threshold instead and
its title says so: how close they came is the margin the threshold has.

``select_worst`` does the choosing and is separate from the drawing. The overlay itself is
``factoryedge.features.overlay.heatmap_overlay``, the same numpy code the device's reject
archive uses; matplotlib (Agg) only lays the sheet out.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.errors import ConfigError, DataError
from factoryedge.evaluation.plots import _pyplot
from factoryedge.features.overlay import colour_table, heatmap_overlay
from factoryedge.scoring import ScoreRule

log = logging.getLogger(__name__)

GOOD = "good"
COLUMNS = 4


@dataclass(frozen=True)
class WorstCases:
    """Indices into the inputs, worst first.

    ``accepts_are_errors`` False means no defective part scored on the normal side of the
    threshold and ``false_accepts`` holds the defective parts nearest it instead; likewise
    ``rejects_are_errors`` for the good parts nearest the anomalous side.
    """

    false_accepts: list[int]
    false_rejects: list[int]
    accepts_are_errors: bool
    rejects_are_errors: bool
    n_false_accepts: int
    n_false_rejects: int
    n_defective: int
    n_good: int
    higher_is_anomalous: bool = True


def select_worst(scores: Sequence[float], labels: Sequence, threshold: float, n_worst: int = 8, *,
                 higher_is_anomalous: bool = True) -> WorstCases:
    """Pick up to ``n_worst`` false accepts and false rejects, or the nearest misses where there are none.

    ``labels`` are "good" or a defect type per part (as ``image_report`` takes them), or
    booleans / 0-1 with true meaning defective. Ties keep the input order.
    """
    s = _scores(scores)
    defect = _is_defect(labels, len(s))
    rule = ScoreRule(_threshold(threshold), bool(higher_is_anomalous))
    if not isinstance(n_worst, (int, np.integer)) or isinstance(n_worst, bool) or n_worst < 1:
        raise ConfigError(f"n_worst {n_worst!r} must be a positive integer")
    bad = np.flatnonzero(defect)
    good = np.flatnonzero(~defect)
    # Most normal-looking defective parts first: the false accepts if any is on the normal
    # side of the threshold, otherwise the ones that came nearest to slipping through.
    anomalous = rule.is_anomalous(s)
    oriented = s if rule.higher_is_anomalous else -s
    bad = bad[np.argsort(oriented[bad], kind="stable")]
    good = good[np.argsort(-oriented[good], kind="stable")]
    fa = bad[~anomalous[bad]]
    fr = good[anomalous[good]]
    return WorstCases(
        false_accepts=[int(i) for i in (fa if len(fa) else bad)[:n_worst]],
        false_rejects=[int(i) for i in (fr if len(fr) else good)[:n_worst]],
        accepts_are_errors=bool(len(fa)),
        rejects_are_errors=bool(len(fr)),
        n_false_accepts=len(fa),
        n_false_rejects=len(fr),
        n_defective=len(bad),
        n_good=len(good),
        higher_is_anomalous=rule.higher_is_anomalous,
    )


def contact_sheet(
    images: Sequence,
    heatmaps: Sequence[np.ndarray | None] | None,
    scores: Sequence[float],
    labels: Sequence,
    threshold: float,
    names: Sequence[str],
    path: str | os.PathLike,
    n_worst: int = 8,
    *,
    colour_order: str = "rgb",
    title: str | None = None,
    higher_is_anomalous: bool = True,
    masks: Sequence[np.ndarray | None] | None = None,
) -> Path | None:
    """Write one PNG of the worst false accepts and false rejects, each with its heatmap overlaid.

    ``images`` are uint8 arrays ((H, W) grey or (H, W, 3) in ``colour_order``) or image
    file paths; only the chosen ones are read. ``heatmaps`` (any resolution, resized to
    each image; None for none) share one colour scale across the sheet, so heat compares
    between panels. Each tile shows the name, score, threshold and true label, in red where
    the model was wrong (by ``ScoreRule(threshold, higher_is_anomalous)``). Where ``masks``
    gives a defect's ground truth (any resolution, non-zero = defect), its outline is drawn
    in cyan over the picture, so a reviewer sees what a false accept missed and whether the
    heat was elsewhere. Returns the path, or None where matplotlib is not installed.
    """
    n = len(images)
    given = {"scores": scores, "labels": labels, "names": names, "heatmaps": heatmaps, "masks": masks}
    for what, seq in given.items():
        if seq is not None and len(seq) != n:
            raise DataError(f"{len(seq)} {what} for {n} images; give one per image")
    worst = select_worst(scores, labels, threshold, n_worst, higher_is_anomalous=higher_is_anomalous)
    rule = ScoreRule(float(threshold), worst.higher_is_anomalous)
    plt = _pyplot()
    if plt is None:
        return None
    s, thr = _scores(scores), float(threshold)
    shown = worst.false_accepts + worst.false_rejects
    maps = {i: heatmaps[i] for i in shown if heatmaps is not None and heatmaps[i] is not None}
    vmin = min((float(np.min(m)) for m in maps.values()), default=0.0)
    vmax = max((float(np.max(m)) for m in maps.values()), default=1.0)
    vmax = vmax if vmax > vmin else vmin + 1.0  # flat maps: all cold rather than a zero-width scale
    defect = _is_defect(labels, n)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    rows = [max(1, -(-len(idx) // COLUMNS)) for idx in (worst.false_accepts, worst.false_rejects)]
    fig = plt.figure(figsize=(3.2 * COLUMNS + 0.8, 3.6 * sum(rows) + 0.9 * (title is not None)), layout="constrained")
    if title:
        fig.suptitle(title, fontsize=13)
    panels = fig.subfigures(2, 1, height_ratios=rows)
    sections = (
        (panels[0], worst.false_accepts, _accept_title(worst, thr)),
        (panels[1], worst.false_rejects, _reject_title(worst, thr)),
    )
    for panel, idx, heading in sections:
        panel.suptitle(heading, fontsize=11, fontweight="bold")
        axes = np.atleast_1d(panel.subplots(max(1, -(-len(idx) // COLUMNS)), COLUMNS)).ravel()
        for ax in axes:
            ax.set_axis_off()
        for ax, i in zip(axes, idx):
            picture = _picture(images[i], colour_order)
            if i in maps:
                picture = heatmap_overlay(picture, maps[i], vmin=vmin, vmax=vmax)
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=255)
            if masks is not None and masks[i] is not None and np.any(masks[i]):
                ax.contour(_resized(np.asarray(masks[i]) > 0, picture.shape[:2]).astype(np.float32), levels=[0.5],
                           colors="cyan", linewidths=1.0)
            wrong = bool(defect[i]) != rule.exceeds(s[i])
            ax.set_title(f"{names[i]}\nscore {s[i]:.4g}  (thr {thr:.4g})\ntrue: {_label_text(labels[i])}",
                         fontsize=8, color="tab:red" if wrong else "black")
        if not idx:
            axes[0].text(0.0, 0.5, "no parts of this kind in the set", fontsize=10)
        elif maps:
            _colour_bar(plt, panel, axes, vmin, vmax)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    log.info("contact sheet written", extra={"path": str(path), "false_accepts": worst.n_false_accepts,
                                             "false_rejects": worst.n_false_rejects})
    return path


def _accept_title(w: WorstCases, thr: float) -> str:
    if not w.n_defective:
        return "False accepts: no defective parts in the set"
    if w.accepts_are_errors:
        side, most = ("below", "lowest") if w.higher_is_anomalous else ("above", "highest")
        return (f"False accepts: {w.n_false_accepts} of {w.n_defective} defective parts scored {side} "
                f"the threshold {thr:.4g}; the {len(w.false_accepts)} {most}")
    return (f"No false accepts (all {w.n_defective} defective parts rejected): "
            f"the {len(w.false_accepts)} nearest the threshold {thr:.4g}")


def _reject_title(w: WorstCases, thr: float) -> str:
    if not w.n_good:
        return "False rejects: no good parts in the set"
    if w.rejects_are_errors:
        side, most = ("at or above", "highest") if w.higher_is_anomalous else ("at or below", "lowest")
        return (f"False rejects: {w.n_false_rejects} of {w.n_good} good parts scored {side} "
                f"the threshold {thr:.4g}; the {len(w.false_rejects)} {most}")
    return (f"No false rejects (all {w.n_good} good parts accepted): "
            f"the {len(w.false_rejects)} nearest the threshold {thr:.4g}")


def _colour_bar(plt, panel, axes, vmin: float, vmax: float) -> None:
    from matplotlib.colors import ListedColormap, Normalize

    mappable = plt.cm.ScalarMappable(norm=Normalize(vmin, vmax), cmap=ListedColormap(colour_table("inferno") / 255.0))
    panel.colorbar(mappable, ax=list(axes), shrink=0.8, label="anomaly heat")


def _resized(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask brought to ``shape`` by nearest neighbour (masks may be stored at another size)."""
    rows = np.arange(shape[0]) * mask.shape[0] // shape[0]
    cols = np.arange(shape[1]) * mask.shape[1] // shape[1]
    return mask[np.ix_(rows, cols)]


def _picture(item, colour_order: str) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        from factoryedge.data.images import read_rgb

        return read_rgb(item)
    image = np.asarray(item)
    if image.dtype != np.uint8:
        raise DataError(f"images must be uint8 arrays or file paths, got an array of dtype {image.dtype}")
    if image.ndim == 3 and colour_order == "bgr":
        return image[..., ::-1]
    if colour_order not in ("rgb", "bgr"):
        raise ConfigError(f"colour_order {colour_order!r} is not one of ['rgb', 'bgr']")
    return image


def _scores(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise DataError(f"scores must be one number per image, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise DataError(f"{int(np.sum(~np.isfinite(s)))} scores are NaN or infinite")
    return s


def _threshold(threshold) -> float:
    try:
        thr = float(threshold)
    except (TypeError, ValueError):
        thr = float("nan")
    if not np.isfinite(thr):
        raise ConfigError(f"threshold {threshold!r} must be a finite number")
    return thr


def _is_defect(labels, n: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise DataError(f"{lab.size} labels for {n} scores; give one label per image")
    if lab.dtype.kind in "USO":
        return np.array([str(x) != GOOD for x in lab.tolist()], dtype=bool)
    if lab.dtype.kind in "biu":
        return lab != 0
    raise DataError(f"labels must be 'good'/defect-type strings or booleans, got dtype {lab.dtype}")


def _label_text(label) -> str:
    if isinstance(label, (str, np.str_)):
        return str(label)
    return "defect" if label else GOOD
