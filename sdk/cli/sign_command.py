"""``factoryedge sign-command``: a signed command envelope for a device that requires signed commands.

Prints the envelope (one JSON line) for a plant system or a shell to publish on the
machine's command topic, e.g.::

    factoryedge sign-command --key ops.key --device factoryedge/v1/plant-1/line-3/press-7 \\
        set_threshold '{"threshold": 4.2}' | mosquitto_pub -t factoryedge/v1/plant-1/line-3/press-7/command -s

The device runs it only within its ``commands.max_age_s`` of the signing time, and once.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from factoryedge.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    # not "command"/"args": the top-level parser keeps the subcommand's name in args.command
    p.add_argument("name", metavar="COMMAND", help="set_threshold, recalibrate or reload")
    p.add_argument("arguments", metavar="ARGS", nargs="?", default="{}",
                   help='the arguments as a JSON object, e.g. \'{"threshold": 4.2}\'')
    p.add_argument("--key", type=Path, required=True, help="private key written by 'factoryedge keygen' (NAME.key)")
    p.add_argument("--device", required=True,
                   help="the machine's topic base, factoryedge/v1/<site>/<line>/<machine> (the command is valid "
                        "there only)")
    p.add_argument("--request-id", help="id the device's response will carry")


def run(args: argparse.Namespace) -> int:
    from factoryedge.signed_commands import sign_command
    from factoryedge.signing import load_private_key

    try:
        parsed = json.loads(args.arguments)
    except ValueError as e:
        raise ConfigError(f"command arguments {args.arguments[:80]!r} are not JSON ({e}); e.g. '{{\"threshold\": 4.2}}'") \
            from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"command arguments must be a JSON object, got {args.arguments[:80]!r}; e.g. '{{\"threshold\": 4.2}}'")
    envelope = sign_command(load_private_key(args.key), args.name, parsed, args.device, args.request_id)
    sys.stdout.write(envelope.decode("utf-8") + "\n")
    return 0
