"""``factoryedge train vibration|image``: learn the normal state (of a machine or a part), calibrate, export a bundle."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from factoryedge.errors import ConfigError, DataError

log = logging.getLogger("factoryedge.train")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["vibration", "image"], help="what kind of model to train")
    p.add_argument("--data", nargs="+", required=True, metavar="DATA",
                   help="vibration: normal recordings, a data set (cwru-48k, cwru-12k) or files [normal=]PATH[#START:STOP] "
                        "(fault recordings among them are ignored for training); image: one inspection set folder "
                        "(train/good, test/good, test/<defect>, ground_truth/) or 'magnetic-tile'")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoint, learning curves, bundle/")
    p.add_argument("--model", choices=["dense", "lstm", "patchcore", "fanogan", "autoencoder", "classifier"], default=None,
                   help="vibration: dense (autoencoder on classic features, default) or lstm (recurrent autoencoder "
                        "on frames); image: patchcore (default), fanogan, autoencoder, or classifier (supervised, "
                        "needs labelled defects)")
    p.add_argument("--lstm-input", choices=["log_spectrum", "samples"], default="log_spectrum",
                   help="what each LSTM step sees: a frame's log spectrum (default) or its raw samples")
    p.add_argument("--name", help="bundle name (default: from the data and model)")
    p.add_argument("--version", default="1.0.0", help="bundle version (default 1.0.0)")
    p.add_argument("--sample-rate", type=float, help="sample rate in Hz for CSV/NPY files (others carry it)")
    p.add_argument("--channels", help="comma-separated channel names to use (default: all / DE for CWRU)")
    p.add_argument("--window", type=int, help="samples per window (default ~85 ms, a power of two)")
    p.add_argument("--hop", type=int, help="samples between windows on the device (default window/4)")
    p.add_argument("--max-frequency", type=float, help="highest frequency the features use, Hz")
    p.add_argument("--rpm", type=float, help="shaft speed, for bearing defect-frequency features")
    p.add_argument("--bearing", choices=["none", "skf6205"], default=None,
                   help="bearing geometry for defect-frequency features (default skf6205 for CWRU data)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 300 dense, 150 lstm)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-false-reject", default=None, metavar="SHARE|none",
                   help="image models: the threshold rejects at most this share of held-out good parts (default "
                        "0.01 = 1 %%, counted on good images the model did not learn from); 'none' keeps the older, "
                        "conservative q99 rule (median + 1 x (q99 - median)). Vibration models keep their own rule")
    p.add_argument("--no-export", action="store_true", help="train and save the checkpoint only")
    p.add_argument("--skip-s", type=float, default=None,
                   help="snapshot runs (femto-pronostia, LABEL=run.npz): run-in skipped before commissioning")
    p.add_argument("--duration-s", type=float, default=None,
                   help="snapshot runs: commissioning period in seconds, the only part trained on")


def run(args: argparse.Namespace) -> int:
    if args.kind == "image":
        from factoryedge.cli.train_image import run_image

        return run_image(args)
    args.model = args.model or "dense"
    if args.model not in ("dense", "lstm"):
        raise ConfigError(f"--model {args.model} is an image model; vibration models are dense or lstm")
    if args.max_false_reject is not None:
        raise ConfigError(f"--max-false-reject {args.max_false_reject} applies to image models; vibration models keep "
                          "their quantile rule (median + 3 x (q99 - median) of held-out normal windows)")
    import torch
    from pydantic import ValidationError

    from factoryedge.bundle import format_validation_error
    from factoryedge.data.datasets import DATASET_MAX_FREQUENCY, resolve
    from factoryedge.data.snapshots import resolve_snapshots
    from factoryedge.features.vibration import SKF6205_ORDERS, default_feature_spec
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig, train_vibration

    runs = resolve_snapshots(args.data)
    if runs is not None:
        return _train_snapshots(runs, args)
    channels = tuple(c.strip() for c in args.channels.split(",")) if args.channels else None
    selection = resolve(args.data, sample_rate=args.sample_rate, channels=channels)
    normal = selection.normal + [r for r in selection.faults if r.label == "unknown"]
    if selection.faults:
        log.info("ignoring %d fault recording(s) for training; evaluate with them instead", len(selection.faults))
    if not normal:
        raise DataError(f"no normal recordings among {args.data}; label files as normal=PATH")
    rates = {r.sample_rate for r in normal}
    if len(rates) > 1:
        raise DataError(f"normal recordings have different sample rates {sorted(rates)}; resample them to one rate")
    first = normal[0]
    rpm = args.rpm or first.meta.get("rpm")
    bearing = args.bearing or ("skf6205" if selection.dataset else "none")
    orders = SKF6205_ORDERS if bearing == "skf6205" else None
    if orders and not rpm:
        raise ConfigError("--bearing needs the shaft speed: pass --rpm")
    max_freq = args.max_frequency or DATASET_MAX_FREQUENCY.get(selection.dataset or "")
    try:
        spec = default_feature_spec(
            first.sample_rate, first.channels, window=args.window, hop=args.hop, max_frequency=max_freq,
            shaft_hz=rpm / 60.0 if orders else None, defect_orders=orders,
        )
    except ValidationError as e:
        raise ConfigError(f"feature settings are invalid: {format_validation_error(e)}") from None
    epochs = args.epochs or (300 if args.model == "dense" else 150)
    cfg = VibrationTrainConfig(
        model=args.model, lstm_input=args.lstm_input,
        fit=FitConfig(epochs=epochs, patience=40 if args.model == "dense" else 25, seed=args.seed),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    trained = train_vibration(normal, spec, cfg, args.out)
    checkpoint = args.out / "checkpoint.pt"
    torch.save(trained, checkpoint)
    print(f"trained {args.model} model: {len(trained.fit_result.history)} epochs, best validation loss "
          f"{trained.fit_result.best_val_loss:.4g}; threshold {trained.threshold:.4g}")
    png = trained.fit_result.curve_png
    print(f"learning curves: {trained.fit_result.curve_csv}" + (f", {png}" if png else ""))
    print(f"checkpoint: {checkpoint}")
    if args.no_export:
        return 0
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle

    name = args.name or f"{selection.dataset or 'vibration'}-{args.model}"
    bundle = build_vibration_bundle(trained, args.out / "bundle", name=name, version=args.version)
    parity = bundle.manifest.parity
    print(f"bundle: {bundle.path} ({name} {args.version}); ONNX parity max abs diff "
          f"{max(parity.max_abs_diff.values()):.2e} on {parity.n_inputs} golden inputs")
    return 0


# One window per PRONOSTIA snapshot (2560 samples): the device's debounce then counts snapshots.
SNAPSHOT_WINDOW = 2560


def _train_snapshots(runs, args: argparse.Namespace) -> int:
    """The dense autoencoder and Isolation Forest on snapshot runs' commissioning periods, exported."""
    import torch

    from factoryedge.evaluation.run_to_failure import DURATION_S, SKIP_S, Commissioning
    from factoryedge.features.vibration import default_feature_spec
    from factoryedge.training.snapshots import train_on_snapshots
    from factoryedge.training.trainer import FitConfig
    from factoryedge.training.vibration import VibrationTrainConfig

    if args.model != "dense":
        raise ConfigError(f"--model {args.model}: snapshot runs train the dense autoencoder only")
    first = runs[0]
    window = args.window or min(SNAPSHOT_WINDOW, first.bursts.shape[1])
    spec = default_feature_spec(first.sample_rate, first.channels, window=window, hop=args.hop or window,
                                max_frequency=args.max_frequency)
    comm = Commissioning(SKIP_S if args.skip_s is None else args.skip_s,
                         DURATION_S if args.duration_s is None else args.duration_s)
    cfg = VibrationTrainConfig(fit=FitConfig(epochs=args.epochs or 300, patience=40, seed=args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    trained = train_on_snapshots(runs, spec, comm, cfg, args.out)
    torch.save(trained, args.out / "checkpoint.pt")
    print(f"trained dense model on the commissioning periods of {len(runs)} run(s): "
          f"{len(trained.fit_result.history)} epochs; threshold {trained.threshold:.4g}")
    if args.no_export:
        return 0
    from factoryedge.exporters.vibration_bundle import build_vibration_bundle

    bundle = build_vibration_bundle(trained, args.out / "bundle", name=args.name or "snapshots-dense",
                                    version=args.version)
    print(f"bundle: {bundle.path}")
    return 0
