"""The ``factoryedge`` command. Each subcommand lives in its own module and imports its
heavy dependencies (torch, onnxruntime) only when it runs, so ``--help`` is instant and the
device commands never load torch. The CLI is the composition root: the only package that
imports both ``factoryedge.runtimes`` and ``factoryedge.exporters`` (tests/test_import_direction.py).

Errors a user can cause (``FactoryEdgeError``) end as one line on stderr with exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from factoryedge import __version__
from factoryedge.errors import FactoryEdgeError

# subcommand -> module under factoryedge.cli with add_arguments(parser) and run(args) -> int
COMMANDS = {
    "demo": ("demo", "run the end-to-end demo on a simulated machine (no hardware, no data needed)"),
    "train": ("train", "train a model on normal data and export it as a verified bundle"),
    "export": ("export", "export a training run's checkpoint to a bundle (ONNX + parity check)"),
    "evaluate": ("evaluate", "score labelled recordings with a bundle and its baseline; report metrics"),
    "calibrate": ("calibrate", "set an image bundle's threshold on a line's own good parts by a false-reject budget; "
                                "writes a copy"),
    "show": ("show", "verify a bundle and show its manifest and signer"),
    "keygen": ("keygen", "write an Ed25519 key pair for signing bundles"),
    "sign": ("sign", "sign a bundle's manifest (which covers every artefact) with a private key"),
    "sign-command": ("sign_command", "sign a command for a device whose profile requires signed commands"),
    "run": ("run", "run the device program from a profile: sensor in, anomalies out; or camera in, pass/reject decisions out"),
    "watch": ("watch", "print the anomalies and status that devices publish to a broker"),
    "sparkplug-listen": ("sparkplug_listen", "print the Sparkplug B messages on a broker, decoded (as a SCADA host sees them)"),
    "simulate-sensor": ("simulate_sensor", "stream a simulated or recorded vibration sensor to a pty or serial port"),
    "build-engine": ("build_engine", "build a TensorRT engine for this device from a bundle (on the Jetson that runs it)"),
    "doctor": ("doctor",
               "report what this machine offers: TensorRT, CUDA, GPU/DLA, Jetson, ONNX Runtime, camera, serial, broker"),
}

# Old names kept working for a factory's scripts: hidden from --help, one deprecation line on stderr.
ALIASES = {"inspect": "show"}

EPILOG = """examples:
  factoryedge train vibration --data cwru-48k --out runs/cwru48
  factoryedge evaluate runs/cwru48/bundle cwru-48k
  factoryedge show runs/cwru48/bundle
data sets: cwru-48k, cwru-12k (from ../shared/data or $FACTORYEDGE_DATA), or files LABEL=PATH[#START:STOP]
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factoryedge",
        description="Anomaly-detection models from training to factory hardware.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"factoryedge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        importlib.import_module(f"factoryedge.cli.{module}").add_arguments(p)
    for old, new in ALIASES.items():
        # no help=: argparse then leaves the alias out of the command list
        p = sub.add_parser(old, description=f"deprecated name of 'factoryedge {new}': {COMMANDS[new][1]}")
        importlib.import_module(f"factoryedge.cli.{COMMANDS[new][0]}").add_arguments(p)
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Third-party exporters are chatty at INFO; keep our own progress readable.
    for noisy in ("torch", "onnxscript", "onnx_ir", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if args.command in ALIASES:
        print(f"factoryedge {args.command}: deprecated, it is now 'factoryedge {ALIASES[args.command]}' "
              "(same arguments)", file=sys.stderr)
    _configure_logging(args.verbose, args.quiet)
    module = importlib.import_module(f"factoryedge.cli.{COMMANDS[ALIASES.get(args.command, args.command)][0]}")
    try:
        return int(module.run(args) or 0)
    except FactoryEdgeError as e:
        print(f"factoryedge {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"factoryedge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
