"""Pictures of runs to failure: each method's score over life with its threshold and alarm
episodes, and the trade-off between early episodes and lead time over threshold multiples."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from factoryedge.evaluation.plots import _pyplot
from factoryedge.evaluation.run_to_failure import RunEvaluation

LABELS = {"model": "dense autoencoder", "baseline": "Isolation Forest", "recurrent": "recurrent autoencoder",
          "rms_rule": "RMS rule"}
COLOURS = {"model": "tab:blue", "baseline": "tab:green", "recurrent": "tab:purple", "rms_rule": "tab:red"}


def plot_run(run: RunEvaluation, path: Path, title: str) -> Path | None:
    """One panel per method: score over life in hours (log scale), threshold, episodes shaded."""
    plt = _pyplot()
    if plt is None:
        return None
    names = list(run.methods)
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 2.3 * len(names)), sharex=True)
    axes = np.atleast_1d(axes)
    life_h = run.life_s / 3600
    for ax, name in zip(axes, names):
        m = run.methods[name]
        t_h = m.starts / 3600
        lo = np.percentile(m.scores, 1) if len(m.scores) else 0.0
        shift = -lo + 1e-3 if (name == "baseline" and lo <= 0) else 0.0  # IF scores can be negative
        ax.plot(t_h, m.scores + shift, lw=0.6, color=COLOURS.get(name, "k"))
        ax.axhline(m.threshold + shift, color="k", ls="--", lw=0.8, label=f"threshold {m.threshold:.3g}")
        for e in m.episodes:
            ax.axvspan(e.start_s / 3600, (e.end_s if e.end_s is not None else run.life_s) / 3600,
                       color="orange", alpha=0.3, lw=0)
        ax.axvspan(run.commissioning.skip_s / 3600, run.commissioning.end_s / 3600, color="grey", alpha=0.15, lw=0)
        ax.axvline(life_h / 2, color="grey", ls=":", lw=0.8)
        r = m.result
        ax.set_title(f"{LABELS.get(name, name)}: {r['early_episodes']} early episode(s), "
                     f"{'alarmed' if r['alarmed'] else 'NOT alarmed'} at end, lead {r['lead_s'] / 60:.1f} min",
                     fontsize=9)
        if np.all(m.scores + shift > 0):
            ax.set_yscale("log")
        ax.set_ylabel("score" + (" (shifted)" if shift else ""), fontsize=8)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1].set_xlabel("hours since first snapshot (grey: commissioning; dotted: half of life; orange: alarm)")
    axes[-1].set_xlim(0, life_h)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(curves: dict[str, list[dict]], path: Path, title: str) -> Path | None:
    """Per method, one point per threshold multiple: early episodes (all runs) vs median lead time.

    ``curves[method]`` is a list of {"multiple", "early_episodes", "median_lead_s", "alarmed_runs"}.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in curves.items():
        x = [p["early_episodes"] for p in pts]
        y = [p["median_lead_s"] / 60 for p in pts]
        ax.plot(x, y, "o-", color=COLOURS.get(name, "k"), label=LABELS.get(name, name), ms=3)
        for p, xi, yi in zip(pts, x, y):
            ax.annotate(f"{p['multiple']:g}", (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel("early alarm episodes, all runs (after commissioning, before half of life)")
    ax.set_ylabel("median lead time before end of life (min)")
    ax.set_title(title + "\n(labels: threshold multiple; RMS: x commissioning RMS, others: margin)", fontsize=9)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
