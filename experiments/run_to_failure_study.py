"""Leave-one-bearing-out choice of every setting, for every method, on PRONOSTIA runs to failure.

For every held-out bearing, each method's settings are chosen on the *other five* runs only,
then applied to the held-out run; the table shows what each run gets that way. The objective,
in order: fewest runs with early episodes, most runs alarmed at the end, longest median lead.

Settings searched (all leave-one-bearing-out, never on the run reported):

- commissioning (run-in skip, duration): ``COMMISSIONING``;
- window per snapshot: the whole 2560-sample burst, or two 1280-sample windows;
- feature set: the classic set (time statistics, 16 spectral bands, 20 envelope bands per
  channel) or a compact one (time statistics, 8 spectral bands, no envelope);
- the recurrent autoencoder's sequence length (snapshots of history): ``STEPS``;
- debounce (k of n) and threshold multiple (``run_to_failure.threshold_at``).

Methods, as the seed compares them, all through the device's debounce:

- ``model``: dense autoencoder on the run's own commissioning windows (protocol "own");
- ``recurrent``: LSTM autoencoder over the last L snapshots' features, own commissioning;
- ``baseline``: Isolation Forest, own commissioning;
- ``model_transfer`` / ``baseline_transfer``: trained on the *other five* runs' commissioning
  windows, threshold commissioned on the run itself (protocol "transfer"). The held-out run's
  own commissioning windows are part of the training data of the models scored on the other
  runs; they are early-life data a plant has before it judges that bearing;
- ``rms_rule``: alarm at a multiple of the commissioning RMS, the standard every plant has.

    .venv/bin/python -m experiments.run_to_failure_study --out runs/rtf-study [--workers 2]
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from factoryedge.debounce import DebounceConfig
from factoryedge.evaluation.run_to_failure import Commissioning, evaluate_run, rms_ratio, sweep

COMMISSIONING = [(300.0, 900.0), (600.0, 1200.0), (1800.0, 600.0)]
WINDOWS = [2560, 1280]
FEATURES = ["classic", "compact"]
STEPS = [6, 18]
DEBOUNCE = [(3, 5), (5, 10), (10, 20)]
RMS_GRID = [1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
SCORE_GRID = [2.0, 3.0, 5.0, 8.0, 12.0, 20.0]
FAMILIES = ["model", "recurrent", "baseline", "model_transfer", "baseline_transfer", "rms_rule"]


def feature_spec(kind: str, window: int, channels):
    from factoryedge.features.vibration import default_feature_spec

    spec = default_feature_spec(25600.0, channels, window=window, hop=window)
    if kind == "compact":
        spec = spec.model_copy(update={"spectral_bands": 8, "envelope_bands": 0, "envelope_band": None})
    return spec


def score_config(config: tuple, out: Path) -> dict:
    """Every method's per-run judge results over the debounce x multiple grid, for one
    (commissioning, window, feature set)."""
    import torch

    from factoryedge.data.snapshots import femto_pronostia
    from factoryedge.features import make_preprocessor
    from factoryedge.training.baseline import fit_forest
    from factoryedge.training.snapshots import (
        RECURRENT_FIT,
        burst_features,
        commissioning_windows,
        sequence_scores,
        train_on_snapshots,
        train_sequence_autoencoder,
    )
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig

    torch.set_num_threads(1)
    comm_t, window, features = config
    comm = Commissioning(*comm_t)
    runs = femto_pronostia()
    spec = feature_spec(features, window, runs[0].channels)
    pre = make_preprocessor(spec)
    fit_cfg = FitConfig(epochs=300, patience=40, log_every=1000)
    cfg = VibrationTrainConfig(fit=fit_cfg)
    tag = f"{int(comm_t[0])}-{int(comm_t[1])}_{window}_{features}"
    started = time.perf_counter()

    def dense_and_forest(recs, x, curves: Path):
        # the forest is fitted on the autoencoder's training windows, as train_on_snapshots does,
        # and scored by scikit-learn (what its ONNX export computes) to skip the slow conversion
        trained = train_on_snapshots(recs, spec, comm, cfg, curves, baseline=False)
        forest = fit_forest(np.concatenate([pre(commissioning_windows(r, spec, comm)[0]) for r in recs]),
                            seed=fit_cfg.seed)
        with torch.no_grad():
            m = trained.module(torch.as_tensor(x))[0].numpy().astype(np.float64)
        return m, -forest.decision_function(x.astype(np.float32)).astype(np.float64)

    evs = []
    for i, rec in enumerate(runs):
        w, burst, starts = rec.windows(spec.window, spec.hop)
        x = pre(w)
        scores = {"rms_rule": rms_ratio(w, comm.mask(starts))}
        scores["model"], scores["baseline"] = dense_and_forest([rec], x, out / "curves" / tag / rec.label / "dense")
        others = [r for j, r in enumerate(runs) if j != i]
        scores["model_transfer"], scores["baseline_transfer"] = dense_and_forest(
            others, x, out / "curves" / tag / rec.label / "transfer")
        f = burst_features(x, burst, rec.n_bursts)
        for steps in STEPS:
            module, _, _ = train_sequence_autoencoder(f, rec.t_s, comm, steps, RECURRENT_FIT,
                                                      out / "curves" / tag / rec.label / f"recurrent{steps}")
            scores[f"recurrent:{steps}"] = sequence_scores(module, f, steps)[burst]
        evs.append(evaluate_run(rec.label, rec.life_s, starts, spec.window / spec.sample_rate, scores, comm,
                                DebounceConfig()))
    table = {}
    for (k, n), method in itertools.product(DEBOUNCE, evs[0].methods):
        grid = RMS_GRID if method == "rms_rule" else SCORE_GRID
        per_run = [sweep(ev, method, np.array(grid), DebounceConfig(k=k, n=n)) for ev in evs]
        family, _, steps = method.partition(":")
        for j, mult in enumerate(grid):
            key = json.dumps({"commissioning": comm_t, "window": window, "features": features,
                              "steps": int(steps) if steps else None, "debounce": [k, n], "multiple": mult})
            table.setdefault(family, {})[key] = [{kk: v for kk, v in r[j].items() if kk != "multiple"}
                                                 for r in per_run]
    logging.info("scored %s in %.0f s", tag, time.perf_counter() - started)
    return table


def objective(results: list[dict]) -> tuple:
    return (-sum(r["early_episodes"] > 0 for r in results), sum(r["alarmed"] for r in results),
            float(np.median([r["lead_s"] for r in results])))


def lobo(table: dict[str, list[dict]], names: list[str]) -> list[dict]:
    """For each held-out run, the setting best on the other runs, and what the held-out run gets."""
    chosen = []
    for i, held in enumerate(names):
        best = max(table, key=lambda key: objective([r for j, r in enumerate(table[key]) if j != i]))
        chosen.append({"run": held, "setting": json.loads(best), **table[best][i]})
    return chosen


def describe(s: dict) -> str:
    c = s["commissioning"]
    steps = f" L{s['steps']}" if s["steps"] else ""
    return (f"{c[0]:g}+{c[1]:g}s w{s['window']} {s['features']}{steps} k{s['debounce'][0]}/{s['debounce'][1]} "
            f"x{s['multiple']:g}")


def main() -> None:
    from factoryedge.data.snapshots import FEMTO_RUNS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/rtf-study"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configs = list(itertools.product(COMMISSIONING, WINDOWS, FEATURES))
    tables: dict[str, dict] = {f: {} for f in FAMILIES}
    with ProcessPoolExecutor(args.workers) as pool:
        for part in pool.map(score_config, configs, itertools.repeat(args.out)):
            for family, rows in part.items():
                tables[family].update(rows)
    names = list(FEMTO_RUNS)
    chosen = {family: lobo(tables[family], names) for family in FAMILIES}
    lines = ["| method | " + " | ".join(names) + " | runs with early episodes | alarmed | median lead (min) |",
             "|---|" + "---|" * (len(names) + 3)]
    for family in FAMILIES:
        res = chosen[family]
        cells = [f"{r['early_episodes']} / {'yes' if r['alarmed'] else 'no'} / {r['lead_s'] / 60:.1f}" for r in res]
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {sum(r['early_episodes'] > 0 for r in res)}/6 | "
                     f"{sum(r['alarmed'] for r in res)}/6 | {np.median([r['lead_s'] for r in res]) / 60:.1f} |")
    lines += ["", "Cells: early episodes / alarmed at the end / lead in minutes, each run with the settings chosen "
              "on the other five.", "", "Settings chosen per held-out run:", ""]
    for family in FAMILIES:
        lines.append(f"- {family}: " + "; ".join(f"{r['run']}: {describe(r['setting'])}" for r in chosen[family]))
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")
    (args.out / "grid.json").write_text(json.dumps(tables, indent=0) + "\n")


if __name__ == "__main__":
    main()
