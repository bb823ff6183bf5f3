"""``factoryedge keygen --out DIR``: an Ed25519 key pair for signing bundles."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="directory for NAME.key (private, mode 0600) and NAME.pub")
    p.add_argument("--name", default="signing", help="file name stem of the key pair (default: signing)")


def run(args: argparse.Namespace) -> int:
    from factoryedge.signing import generate_keypair

    private, public, fp = generate_keypair(args.out, args.name)
    print(f"private key: {private} (keep it off devices; sign with 'factoryedge sign BUNDLE --key {private}')")
    print(f"public key:  {public} (list it under model.trusted_keys in a device profile)")
    print(f"fingerprint: {fp}")
    return 0
