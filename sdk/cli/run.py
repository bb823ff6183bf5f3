"""``factoryedge run PROFILE``: the device program (condition monitoring or inspection), until SIGTERM or SIGINT."""
from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

log = logging.getLogger("factoryedge.run")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", type=Path, help="device profile (YAML); examples in firmware-config/profiles/")
    p.add_argument("--check", action="store_true", help="validate the profile and the bundle, then exit")


def run(args: argparse.Namespace) -> int:
    from factoryedge.runtimes.logs import configure
    from factoryedge.runtimes.profile import load_profile

    profile = load_profile(args.profile)
    if not args.verbose:
        # --check answers in one line on stdout (or one error on stderr); the device's INFO log is for running
        configure("WARNING" if args.check else profile.logging.level, profile.logging.format)
    if profile.kind == "inspection":
        return _run_inspection(args, profile)
    if args.check:
        return _check_monitoring(args, profile)
    from factoryedge.runtimes.monitoring.program import ConditionMonitor

    monitor = ConditionMonitor(profile)
    _run_until_signal(monitor, "stopping and flushing the outbox")
    return 1 if monitor.failed else 0


def _check_monitoring(args: argparse.Namespace, profile) -> int:
    from factoryedge.runtimes.monitoring.program import check_source_rate
    from factoryedge.runtimes.monitoring.vibration_model import VibrationModel
    from factoryedge.runtimes.registry import resolve
    from factoryedge.signing import describe_signature

    trusted = profile.model.trusted()
    with VibrationModel.load(profile.model.bundle, profile.model.backend, trusted_keys=trusted) as model:
        cls = resolve("source", profile.sensor.uri)
        rate = "checked when the source opens"
        if getattr(cls, "RATE_BEFORE_OPEN", False):  # the constructor opens nothing; the URI declares the rate
            check_source_rate(cls.from_uri(profile.sensor.uri, **profile.sensor.options), profile.sensor.uri, model)
            rate = f"{model.spec.sample_rate:g} Hz as the sensor declares"
        print(f"profile {args.profile} is valid; bundle {model.name} {model.version} verified, "
              f"{describe_signature(model.bundle.path, trusted)}; sample rate {rate}{_plant(profile)}")
    return 0


def _plant(profile) -> str:
    from factoryedge.runtimes.plant.config import check_plant_outputs

    said = check_plant_outputs(profile)
    return f"; {said}" if said else ""


def _run_inspection(args: argparse.Namespace, profile) -> int:
    from factoryedge.runtimes.inspection.image_model import ImageModel
    from factoryedge.signing import describe_signature

    if args.check:
        trusted = profile.model.trusted()
        with ImageModel.load(profile.model.bundle, profile.model.backend, trusted_keys=trusted) as model:
            print(f"profile {args.profile} is valid; image bundle {model.name} {model.version} verified, "
                  f"{describe_signature(model.bundle.path, trusted)} (threshold {model.threshold:.4g}){_plant(profile)}")
        return 0
    from factoryedge.runtimes.inspection.station import InspectionStation

    station = InspectionStation(profile)
    _run_until_signal(station, "stopping; every pending part still gets its decision")
    return 1 if station.failed else 0


def _run_until_signal(program, stopping: str) -> int:
    """``program.run()`` until SIGTERM (systemd) or SIGINT, which call ``program.stop()``."""

    def _stop(signum, _frame):
        log.info("received %s: %s", signal.Signals(signum).name, stopping)
        program.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    program.run()
    return 0
