"""``factoryedge evaluate BUNDLE femto-pronostia``: a vibration bundle judged in time on runs to failure.

Two protocols decide where each run's normal state comes from; both use the run's own
commissioning period (``--skip-s``, ``--duration-s``) to set every threshold:

- ``transfer`` (default): the bundle's model and Isolation Forest, trained on *other*
  bearings, score the run; only the thresholds are re-learned from this run's commissioning
  scores, as a technician commissioning a new machine with a shipped bundle would. A run whose
  data the bundle was trained on is flagged ``bundle_trained_on_this_run``.
- ``own``: a dense autoencoder of the bundle's feature recipe and size, an Isolation Forest,
  and a recurrent autoencoder over the last ``--steps`` snapshots' features (method
  ``recurrent``) are trained on this run's commissioning period alone (needs the ``train``
  extra).

The RMS rule needs no training: it alarms at a multiple of the commissioning RMS.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from factoryedge.debounce import DebounceConfig
from factoryedge.errors import DataError
from factoryedge.evaluation.run_to_failure import (
    DURATION_S,
    MULTIPLES,
    RMS_MULTIPLE,
    SEQUENCE_STEPS,
    SKIP_S,
    Commissioning,
    evaluate_run,
    rms_ratio,
    summary,
    sweep,
)
from factoryedge.evaluation.run_to_failure_plots import plot_run, plot_tradeoff

log = logging.getLogger("factoryedge.evaluate")

RMS_SWEEP = np.array([1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])
MARGIN_SWEEP = np.array([1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0])


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runs to failure (femto-pronostia, LABEL=run.npz, LABEL=folder of acc_*.csv)")
    g.add_argument("--protocol", choices=["transfer", "own", "both"], default="transfer",
                   help="transfer: the bundle's models, thresholds re-learned on each run's commissioning (default); "
                        "own: models trained on each run's commissioning period; both: report both")
    g.add_argument("--skip-s", type=float, default=SKIP_S, help=f"run-in skipped before commissioning (default {SKIP_S:g})")
    g.add_argument("--duration-s", type=float, default=DURATION_S,
                   help=f"commissioning period in seconds (default {DURATION_S:g})")
    g.add_argument("--rms-multiple", type=float, default=RMS_MULTIPLE,
                   help=f"RMS rule: alarm at this multiple of the commissioning RMS (default {RMS_MULTIPLE:g})")
    g.add_argument("--margin", type=float, default=None,
                   help="learned scores: threshold median + MARGIN x (q99 - median) of commissioning (default per "
                        "method: " + ", ".join(f"{k} {v:g}" for k, v in MULTIPLES.items() if k != "rms_rule") + ")")
    g.add_argument("--steps", type=int, default=SEQUENCE_STEPS,
                   help=f"own protocol: snapshots of history the recurrent autoencoder reads (default {SEQUENCE_STEPS})")
    g.add_argument("--k", type=int, default=3, help="debounce: raise on k of the last n windows (default 3)")
    g.add_argument("--n", type=int, default=5, help="debounce: n (default 5)")


def run(bundle, runs, args: argparse.Namespace) -> int:
    """Evaluate ``runs`` (snapshot recordings) and write report.json and the pictures."""
    from factoryedge.data.snapshots import snapshots_sha256
    from factoryedge.runtimes.monitoring.recordings import RecordingScorer

    m = bundle.manifest
    spec = m.preprocessing
    comm = Commissioning(args.skip_s, args.duration_s)
    debounce = DebounceConfig(k=args.k, n=args.n)
    multiples = {k: (v if args.margin is None else args.margin) for k, v in MULTIPLES.items()}
    multiples["rms_rule"] = args.rms_multiple
    if args.steps < 1:
        raise DataError(f"--steps {args.steps} must be at least 1 snapshot")
    protocols = ["transfer", "own"] if args.protocol == "both" else [args.protocol]
    trained_on = {d.sha256 for d in m.provenance.data}
    out = args.out or Path("evaluation") / m.name
    results: dict[str, list] = {p: [] for p in protocols}
    flags = []
    for rec in runs:  # refuse a run too short for the commissioning before any scoring
        if comm.end_s >= rec.life_s / 2:
            raise DataError(f"{rec.label}: commissioning ends at {comm.end_s:g} s, after half of its life "
                            f"({rec.life_s / 2:g} s); commission for a shorter period (--skip-s, --duration-s)")
    scorer = RecordingScorer(bundle) if "transfer" in protocols else None
    for rec in runs:
        rec = _matched(rec, spec)
        windows, burst, starts = rec.windows(spec.window, spec.hop)
        rms = rms_ratio(windows, comm.mask(starts))
        window_s = spec.window / spec.sample_rate
        for protocol in protocols:
            if protocol == "transfer":
                model, base = scorer.score_windows(windows)
                scores = {"model": np.asarray(model, np.float64)}
                if base is not None:
                    scores["baseline"] = np.asarray(base, np.float64)
            else:
                scores = _own_scores(rec, windows, burst, spec, comm, m, args.steps, out / "own" / _slug(rec.label))
            scores["rms_rule"] = rms
            ev = evaluate_run(rec.source, rec.life_s, starts, window_s, scores, comm, debounce, multiples)
            results[protocol].append(ev)
            log.info("%s %s: %s", protocol, rec.label, {k: v.result for k, v in ev.methods.items()})
        flags.append(snapshots_sha256(rec) in trained_on)
    report = {"title": f"{m.name} {m.version} ({m.model.architecture}) on runs to failure",
              "protocol": protocols[0],
              "commissioning": {"skip_s": comm.skip_s, "duration_s": comm.duration_s},
              "debounce": {"k": debounce.k, "n": debounce.n, "clear_windows": debounce.clear_windows,
                           "hysteresis": debounce.hysteresis},
              "threshold_multiples": multiples,
              "definitions": {"early_episodes": "alarm episodes raised after commissioning and before half of life",
                              "alarmed": "an alarm episode is active at the end of life",
                              "lead_s": "end of life minus the start of the episode active at the end; 0 if none"},
              "files": {}}
    for i, protocol in enumerate(protocols):
        evs = results[protocol]
        block = {"runs": [ev.as_dict() for ev in evs], "summary": summary(evs), "tradeoff": _tradeoff(evs, debounce)}
        for d, rec in zip(block["runs"], runs):
            d["label"] = rec.label
        if protocol == "transfer":
            for d, flag in zip(block["runs"], flags):
                d["bundle_trained_on_this_run"] = flag
        for ev in evs:
            png = plot_run(ev, out / f"run_{_slug(ev.source)}_{protocol}.png", f"{ev.source} ({protocol})")
            if png:
                report["files"][f"run {ev.source} {protocol}"] = str(png)
        png = plot_tradeoff(block["tradeoff"], out / f"tradeoff_{protocol}.png",
                            f"{m.name}: early episodes vs lead time ({protocol}, {len(evs)} runs)")
        if png:
            report["files"][f"tradeoff {protocol}"] = str(png)
        if i == 0:
            report.update(block)
        else:
            report.setdefault("protocols", {})[protocol] = block
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    report["files"]["report"] = str(out / "report.json")
    print(format_runs(report))
    print("written: " + ", ".join(report["files"].values()))
    return 0


def _matched(rec, spec):
    if rec.sample_rate != spec.sample_rate:
        raise DataError(f"{rec.source} is sampled at {rec.sample_rate:g} Hz; the bundle expects {spec.sample_rate:g} Hz")
    if rec.channels != tuple(spec.channels):
        missing = [c for c in spec.channels if c not in rec.channels]
        if missing:
            raise DataError(f"{rec.source} has channels {list(rec.channels)}; the bundle expects {list(spec.channels)}")
        idx = [rec.channels.index(c) for c in spec.channels]
        rec = type(rec)(rec.bursts[:, :, idx], rec.t_s, rec.sample_rate, tuple(spec.channels), rec.source,
                        rec.label, rec.meta)
    return rec


def _own_scores(rec, windows, burst, spec, comm, manifest, steps: int, out_dir: Path) -> dict[str, np.ndarray]:
    """Scores of a dense autoencoder, an Isolation Forest and a recurrent autoencoder trained on
    this run's commissioning only."""
    import onnxruntime
    import torch

    from factoryedge.features import make_preprocessor
    from factoryedge.training.snapshots import (
        RECURRENT_FIT,
        burst_features,
        sequence_scores,
        train_on_snapshots,
        train_sequence_autoencoder,
    )
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig

    hidden = tuple(manifest.model.parameters.get("hidden", (32, 8)))
    fit_cfg = (manifest.provenance.training or {}).get("config", {})
    cfg = VibrationTrainConfig(dense_hidden=hidden, fit=FitConfig(
        epochs=int(fit_cfg.get("epochs", 300)), patience=int(fit_cfg.get("patience", 40)),
        seed=int(fit_cfg.get("seed", 0)), log_every=100))
    trained = train_on_snapshots([rec], spec, comm, cfg, out_dir / "dense")
    x = make_preprocessor(spec)(windows)
    with torch.no_grad():
        model = trained.module(torch.as_tensor(x))[0].numpy()
    session = onnxruntime.InferenceSession(trained.baseline_onnx, providers=["CPUExecutionProvider"])
    base = -session.run(["scores"], {"X": x.astype(np.float32)})[0].ravel()
    f = burst_features(x, burst, rec.n_bursts)
    recurrent, _, _ = train_sequence_autoencoder(f, rec.t_s, comm, steps, RECURRENT_FIT, out_dir / "recurrent")
    return {"model": model.astype(np.float64), "baseline": base.astype(np.float64),
            "recurrent": sequence_scores(recurrent, f, steps)[burst]}


def _tradeoff(evs, debounce: DebounceConfig) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for name in evs[0].methods if evs else ():
        grid = RMS_SWEEP if name == "rms_rule" else MARGIN_SWEEP
        per_run = [sweep(ev, name, grid, debounce) for ev in evs]
        curves[name] = [{"multiple": float(k),
                         "early_episodes": int(sum(r[i]["early_episodes"] for r in per_run)),
                         "alarmed_runs": int(sum(r[i]["alarmed"] for r in per_run)),
                         "median_lead_s": float(np.median([r[i]["lead_s"] for r in per_run]))}
                        for i, k in enumerate(grid)]
    return curves


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(text)).stem)


def format_runs(report: dict) -> str:
    """One table per protocol: a line per run and method, then the summary, for a terminal."""
    blocks = [(report["protocol"], report)] + list(report.get("protocols", {}).items())
    lines: list[str] = []
    for protocol, block in blocks:
        methods = list(block["summary"])
        lines += [("" if not lines else "\n") + report["title"] + f" - protocol {protocol}",
                  f"{'run':<14}{'life h':>7} | " + " | ".join(f"{n:<24}" for n in methods),
                  f"{'':<21} | " + " | ".join(f"{'early alarmed lead_min':<24}" for _ in methods)]
        for r in block["runs"]:
            cells = [f"{r[n]['early_episodes']:>5} {('yes' if r[n]['alarmed'] else 'no'):>7} "
                     f"{r[n]['lead_s'] / 60:>8.1f}   " if n in r else f"{'-':<24}" for n in methods]
            lines.append(f"{Path(str(r['source'])).stem:<14}{r['life_s'] / 3600:>7.2f} | " + " | ".join(cells))
        for n, sm in block["summary"].items():
            lines.append(f"{n}: {sm['early_episodes']} early episode(s) on {sm['runs_with_early_episodes']} run(s), "
                         f"alarmed at end on {sm['alarmed_runs']}/{sm['runs']}, median lead "
                         f"{sm['median_lead_s'] / 60:.1f} min")
    return "\n".join(lines)
