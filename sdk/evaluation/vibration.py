"""The evaluation report of a vibration bundle: its model and its baseline on the same windows."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from factoryedge.debounce import DebounceConfig, replay
from factoryedge.evaluation.metrics import detection_report, roc_curves
from factoryedge.evaluation.plots import plot_scores, plot_timeline
from factoryedge.scoring import ScoreRule

log = logging.getLogger(__name__)


@dataclass
class ScoredRecording:
    source: str
    label: str
    start_s: np.ndarray
    model: np.ndarray
    baseline: np.ndarray | None


def _by_label(items: list[ScoredRecording], attr: str) -> dict[str, np.ndarray]:
    out: dict[str, list[np.ndarray]] = {}
    for it in items:
        out.setdefault(it.label, []).append(getattr(it, attr))
    return {k: np.concatenate(v) for k, v in out.items()}


def false_alarms(items: list[ScoredRecording], rule: ScoreRule, window_s: float,
                 config: DebounceConfig | None = None) -> dict:
    """The device's debounce replayed on every normal recording: raises per hour of normal running.

    Each recording starts from a fresh debounce, as a device does after a restart. Valid only
    for windows cut at the bundle's hop, which is what the device scores.
    """
    config = config or DebounceConfig()
    runs = [replay(it.model, it.start_s, window_s, rule, config) for it in items if it.label == "normal"]
    hours = sum(r.hours for r in runs)
    raised = sum(r.raised for r in runs)
    return {"debounce": {"k": config.k, "n": config.n, "clear_windows": config.clear_windows,
                         "hysteresis": config.hysteresis},
            "normal_hours": hours, "raised": raised, "per_hour": raised / hours if hours > 0 else None}


def evaluate_vibration(
    items: list[ScoredRecording], model_threshold: float, baseline_threshold: float | None, out_dir: Path, title: str,
    *, rule: ScoreRule | None = None, window_s: float | None = None, debounce: DebounceConfig | None = None,
) -> dict:
    """Metrics (JSON) and pictures (PNG) for the model and, where present, the baseline.

    With ``rule`` and ``window_s`` (windows at the bundle's hop), the report also gives the
    model's false alarms per hour of normal running at the device's debounce.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    model_scores = _by_label(items, "model")
    higher = rule.higher_is_anomalous if rule is not None else True
    report = {
        "title": title,
        "recordings": [{"source": it.source, "label": it.label, "windows": int(len(it.model))} for it in items],
        "model": detection_report(model_scores, model_threshold, higher_is_anomalous=higher),
    }
    if rule is not None and window_s is not None:
        report["model"]["false_alarms"] = false_alarms(items, rule, window_s, debounce)
    plots = {"model_scores": plot_scores(model_scores, model_threshold, roc_curves(model_scores, higher_is_anomalous=higher),
                                          out_dir / "model_scores.png", f"{title}: model")}
    if baseline_threshold is not None and all(it.baseline is not None for it in items):
        base_scores = _by_label(items, "baseline")
        report["baseline"] = detection_report(base_scores, baseline_threshold)
        plots["baseline_scores"] = plot_scores(base_scores, baseline_threshold, roc_curves(base_scores),
                                               out_dir / "baseline_scores.png", f"{title}: Isolation Forest baseline")
    plots["timeline"] = plot_timeline(items, model_threshold, out_dir / "score_timeline.png", title)
    report["files"] = {k: str(v) for k, v in plots.items() if v}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    report["files"]["report"] = str(out_dir / "report.json")
    return report


def format_report(report: dict) -> str:
    """A table a person reads in a terminal: model and baseline side by side per class."""
    m, b = report["model"], report.get("baseline")
    head = f"{'class':<14}{'windows':>8} | {'AUROC':>7}{'AP':>7}{'F1':>7}{'detect':>8}"
    if b:
        head += f" | {'baseline AUROC':>15}{'AP':>7}{'F1':>7}{'detect':>8}"
    lines = [report["title"], head, "-" * len(head)]
    fa = f"{'normal':<14}{m['n_normal_windows']:>8} | {'false alarms':>21}{m['false_alarm_rate']:>8.3f}"
    if b:
        fa += f" | {'false alarms':>29}{b['false_alarm_rate']:>8.3f}"
    lines.append(fa)
    alarms = m.get("false_alarms")
    if alarms and alarms["normal_hours"]:
        d = alarms["debounce"]
        lines.append(f"{'':<14}{'':>8} | {alarms['raised']} alarm(s) raised in {alarms['normal_hours'] * 60:.1f} min of "
                     f"normal running = {alarms['per_hour']:.2f}/h at the device's debounce ({d['k']} of {d['n']})")
    for label in [*sorted(m["per_class"]), "overall"]:
        r = m["overall"] if label == "overall" else m["per_class"][label]
        row = (f"{label:<14}{r['n_windows']:>8} | {r['auroc']:>7.4f}{r['average_precision']:>7.3f}{r['f1']:>7.3f}"
               f"{r['detection_rate']:>8.3f}")
        if b:
            rb = b["overall"] if label == "overall" else b["per_class"][label]
            row += f" | {rb['auroc']:>15.4f}{rb['average_precision']:>7.3f}{rb['f1']:>7.3f}{rb['detection_rate']:>8.3f}"
        lines.append(row)
    lines.append(f"threshold {m['threshold']:.4g} (model)" + (f", {b['threshold']:.4g} (baseline)" if b else "")
                 + "; 'detect' = share of fault windows at or above the threshold")
    return "\n".join(lines)
