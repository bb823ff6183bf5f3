"""``factoryedge simulate-sensor``: a software vibration sensor on a pty or a serial port."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--recording", metavar="DATA",
                     help="stream a recording ([LABEL=]PATH[#START:STOP]) instead of the simulator")
    src.add_argument("--fault", choices=["none", "outer_race", "inner_race", "ball"], default="none",
                     help="simulated bearing fault (default none)")
    p.add_argument("--fault-at", type=float, default=None, help="seconds into the stream at which the fault starts to develop")
    p.add_argument("--growth", type=float, default=10.0, help="seconds over which the fault grows to full severity")
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds (default 60)")
    p.add_argument("--sample-rate", type=float, default=12000.0, help="simulator sample rate in Hz (default 12000)")
    p.add_argument("--rpm", type=float, default=1797.0)
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 axis or 3 axes")
    p.add_argument("--format", choices=["fe1", "csv"], default="fe1", help="wire format (default fe1)")
    p.add_argument("--frame", type=int, default=256, help="samples per frame (default 256)")
    p.add_argument("--scale", type=float, default=1 / 2048, help="physical units per LSB (default 1/2048 g)")
    p.add_argument("--port", help="write to this serial port instead of creating a pseudo-terminal")
    p.add_argument("--baud", type=int, default=921600)
    p.add_argument("--link", type=Path, help="create this symlink to the pty (a stable name, like a udev rule)")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time, 0 = as fast as possible")
    p.add_argument("--corrupt", type=float, default=0.0, help="probability that a frame is damaged (0..1)")
    p.add_argument("--loop", action="store_true", help="repeat the stream until interrupted")
    p.add_argument("--burst", type=int, metavar="SAMPLES",
                   help="a periodic-snapshot sensor: send SAMPLES per burst, one burst every --period seconds")
    p.add_argument("--period", type=float, default=10.0, metavar="SECONDS",
                   help="seconds from one burst's start to the next (with --burst; default 10)")
    p.add_argument("--burst-flag", action="store_true", help="set fe1's burst-start flag on each burst's first frame")
    p.add_argument("--timestamps", action="store_true", help="send fe1 device timestamps (microseconds)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from factoryedge.runtimes.devkit.sensor_node import PtyEndpoint, SensorStreamer, SerialEndpoint

    rec = _recording(args)
    endpoint = SerialEndpoint(args.port, args.baud) if args.port else PtyEndpoint(args.link)
    try:
        streamer = SensorStreamer(rec, endpoint, fmt=args.format, frame=args.frame, scale=args.scale,
                                  speed=args.speed, corrupt=args.corrupt, loop=args.loop, seed=args.seed,
                                  burst=args.burst, period=args.period, burst_flag=args.burst_flag,
                                  timestamps=args.timestamps)
    except BaseException:
        endpoint.close()
        raise
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: streamer.stop())
    where = args.link or endpoint.path
    mode = f", bursts of {args.burst} samples every {args.period:g} s" if args.burst else ""
    print(f"sensor: {len(rec.channels)} channel(s) at {rec.sample_rate:g} Hz, {args.format}{mode}, on {where}",
          flush=True)
    print(f"read it with: serial://{where}?rate={rec.sample_rate:g}&format={args.format}&channels={len(rec.channels)}"
          f"&scale={args.scale:.10g}", flush=True)
    try:
        stats = streamer.run()
    finally:
        endpoint.close()
    lost = getattr(endpoint, "dropped_frames", 0)
    bursts = f"{stats.bursts} bursts, " if args.burst else ""
    print(f"sent {stats.frames} frames, {bursts}{stats.samples} samples, {stats.bytes} bytes, {stats.corrupted} "
          f"corrupted, {lost} lost for want of a reader", file=sys.stderr)
    return 0


def _recording(args):
    if args.recording:
        from factoryedge.data.datasets import parse_file_spec

        return parse_file_spec(args.recording, None, None)
    from factoryedge.data.simulator import simulate_bearing

    fault = None if args.fault == "none" else args.fault
    return simulate_bearing(args.duration, sample_rate=args.sample_rate, rpm=args.rpm, fault=fault,
                            fault_onset_s=args.fault_at if fault else None, growth_s=args.growth if fault else None,
                            n_channels=args.channels, seed=args.seed)
