"""``factoryedge sparkplug-listen``: print every Sparkplug B message on a broker, decoded, one line each."""
from __future__ import annotations

import argparse
import threading


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://host:port (default: %(default)s)")
    p.add_argument("--group", help="only this Sparkplug group (and every STATE); default: all of spBv1.0/#")


def run(args: argparse.Namespace) -> int:
    from factoryedge.runtimes.devkit.sparkplug_listener import listen

    client = listen(args.broker, args.group, emit=lambda line: print(line, flush=True))
    try:
        threading.Event().wait()  # until Ctrl-C or SIGTERM; paho's thread does the work
    except KeyboardInterrupt:
        pass
    finally:
        client.disconnect()
        client.loop_stop()
    return 0
