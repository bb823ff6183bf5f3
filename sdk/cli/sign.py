"""``factoryedge sign BUNDLE --key KEY``: a detached Ed25519 signature over the bundle's manifest."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle directory or .febundle file (signed in place)")
    p.add_argument("--key", type=Path, required=True, help="private key written by 'factoryedge keygen' (NAME.key)")


def run(args: argparse.Namespace) -> int:
    from factoryedge.bundle import sign_bundle
    from factoryedge.signing import SIGNATURE_FILE, load_private_key

    key = load_private_key(args.key)  # a bad key fails before the bundle is touched
    sig = sign_bundle(args.bundle, key)
    print(f"signed {args.bundle} with key {sig.fingerprint} ({SIGNATURE_FILE} covers manifest.json "
          "and, through its sha256s, every artefact)")
    return 0
