"""Leave-one-bearing-out choice of commissioning, threshold multiple and debounce on PRONOSTIA.

For every held-out bearing, each method's setting is chosen on the *other five* runs only,
then applied to the held-out run; the table shows what each run gets that way. The objective,
in order: fewest runs with early episodes, most runs alarmed at the end, longest median lead.

Protocol "own": each run's dense autoencoder and Isolation Forest are trained on its own
commissioning period (as ``factoryedge evaluate --protocol own``). Features are the default
classic set (``default_feature_spec``) on one 2560-sample window per snapshot; window and
feature set were not searched in this first study.

    .venv/bin/python -m experiments.run_to_failure_study --out runs/rtf-study
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
from pathlib import Path

import numpy as np

from factoryedge.debounce import DebounceConfig
from factoryedge.evaluation.run_to_failure import Commissioning, evaluate_run, rms_ratio, sweep

COMMISSIONING = [(300.0, 900.0), (600.0, 1200.0)]
DEBOUNCE = [(3, 5), (5, 10), (10, 20)]
GRID = {"rms_rule": [1.5, 2.0, 2.5, 3.0, 4.0], "model": [2.0, 3.0, 5.0, 8.0, 12.0],
        "baseline": [2.0, 3.0, 5.0, 8.0, 12.0]}


def score_runs(runs, comm: Commissioning, out: Path) -> list:
    import onnxruntime
    import torch

    from factoryedge.features import make_preprocessor
    from factoryedge.features.vibration import default_feature_spec
    from factoryedge.training.snapshots import train_on_snapshots
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig

    spec = default_feature_spec(25600.0, runs[0].channels, window=2560, hop=2560)
    pre = make_preprocessor(spec)
    scored = []
    for rec in runs:
        w, _, starts = rec.windows(spec.window, spec.hop)
        x = pre(w)
        cfg = VibrationTrainConfig(fit=FitConfig(epochs=300, patience=40, log_every=1000))
        tr = train_on_snapshots([rec], spec, comm, cfg, out / "curves" / rec.label)
        with torch.no_grad():
            model = tr.module(torch.as_tensor(x))[0].numpy().astype(np.float64)
        s = onnxruntime.InferenceSession(tr.baseline_onnx, providers=["CPUExecutionProvider"])
        base = -s.run(["scores"], {"X": x.astype(np.float32)})[0].ravel().astype(np.float64)
        scores = {"model": model, "baseline": base, "rms_rule": rms_ratio(w, comm.mask(starts))}
        scored.append(evaluate_run(rec.label, rec.life_s, starts, spec.window / spec.sample_rate, scores, comm,
                                   DebounceConfig()))
        logging.info("scored %s with commissioning %s", rec.label, comm)
    return scored


def objective(results: list[dict]) -> tuple:
    return (-sum(r["early_episodes"] > 0 for r in results), sum(r["alarmed"] for r in results),
            float(np.median([r["lead_s"] for r in results])))


def main() -> None:
    from factoryedge.data.snapshots import femto_pronostia

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/rtf-study"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(1)
    runs = femto_pronostia()
    # table[(comm, kn, method, multiple)] = per-run judge results
    table: dict[tuple, list[dict]] = {}
    for comm_t in COMMISSIONING:
        evs = score_runs(runs, Commissioning(*comm_t), args.out)
        for (k, n), method in itertools.product(DEBOUNCE, GRID):
            per_run = [sweep(ev, method, np.array(GRID[method]), DebounceConfig(k=k, n=n)) for ev in evs]
            for j, mult in enumerate(GRID[method]):
                table[(comm_t, (k, n), method, mult)] = [r[j] for r in per_run]
    names = [r.label for r in runs]
    chosen: dict[str, list[dict]] = {m: [] for m in GRID}
    for i, held in enumerate(names):
        for method in GRID:
            keys = [key for key in table if key[2] == method]
            best = max(keys, key=lambda key: objective([r for j, r in enumerate(table[key]) if j != i]))
            chosen[method].append({"run": held, "commissioning": best[0], "debounce": best[1], "multiple": best[3],
                                   **{k: v for k, v in table[best][i].items() if k != "multiple"}})
    lines = ["| run | " + " | ".join(f"{m}: setting (skip,dur; k,n; x) / early / alarmed / lead min" for m in GRID) + " |",
             "|---|" + "---|" * len(GRID)]
    for i, held in enumerate(names):
        cells = []
        for m in GRID:
            c = chosen[m][i]
            cells.append(f"{c['commissioning'][0]:g},{c['commissioning'][1]:g}; {c['debounce'][0]},{c['debounce'][1]}; "
                         f"x{c['multiple']:g} / {c['early_episodes']} / {'yes' if c['alarmed'] else 'no'} / "
                         f"{c['lead_s'] / 60:.1f}")
        lines.append(f"| {held} | " + " | ".join(cells) + " |")
    for m in GRID:
        res = chosen[m]
        lines.append(f"\n{m}: runs with early episodes {sum(r['early_episodes'] > 0 for r in res)}/6, alarmed "
                     f"{sum(r['alarmed'] for r in res)}/6, median lead {np.median([r['lead_s'] for r in res]) / 60:.1f} min")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text + "\n")
    (args.out / "chosen.json").write_text(json.dumps(chosen, indent=2, default=list) + "\n")
    (args.out / "grid.json").write_text(json.dumps([{"commissioning": k[0], "debounce": k[1], "method": k[2],
                                                      "multiple": k[3], "runs": v} for k, v in table.items()],
                                                    indent=1) + "\n")


if __name__ == "__main__":
    main()
