"""``manifest.sig`` parsing: a malformed or inconsistent signature file is refused, never trusted."""
from __future__ import annotations

import json

import pytest

from factoryedge.bundle import load_bundle, sign_bundle
from factoryedge.errors import BundleError
from factoryedge.signing import (
    SIGNATURE_FILE,
    describe_signature,
    generate_keypair,
    load_private_key,
    load_public_key,
)
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture
def signed(tmp_path):
    private, public, fp = generate_keypair(tmp_path / "keys")
    b = tiny_bundle(tmp_path / "b")
    sig = sign_bundle(b.path, load_private_key(private))
    assert sig.fingerprint == fp
    return b.path, load_public_key(public)


def test_signature_is_over_the_manifest_bytes_and_names_its_key(signed):
    path, key = signed
    assert load_bundle(path, trusted_keys=[key]).manifest.name == "tiny"
    assert describe_signature(path, [key]) == f"signed by {key.fingerprint} (trusted)"
    manifest = path / "manifest.json"
    manifest.write_bytes(manifest.read_bytes() + b" ")  # same JSON, other bytes: no longer what was signed
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(path, trusted_keys=[key])


@pytest.mark.parametrize("change, says", [
    (lambda s: {**s, "schema": "factoryedge.signature/9"}, "this factoryedge reads 'factoryedge.signature/1'"),
    (lambda s: {**s, "algorithm": "rsa"}, "expected 'manifest.json' with 'ed25519'"),
    (lambda s: {**s, "key_fingerprint": "0" * 16}, "is not that of its public_key"),
    (lambda s: {**s, "signature": "!!"}, "valid base64"),
    (lambda s: {**s, "signature": s["public_key"]}, "a signature 64"),
], ids=["schema", "algorithm", "fingerprint", "base64", "length"])
def test_malformed_signature_file_is_refused(signed, change, says):
    path, key = signed
    sig_file = path / SIGNATURE_FILE
    sig_file.write_text(json.dumps(change(json.loads(sig_file.read_text()))))
    with pytest.raises(BundleError, match=says):
        load_bundle(path, trusted_keys=[key])


def test_signature_file_that_is_not_json_is_refused(signed):
    path, key = signed
    (path / SIGNATURE_FILE).write_bytes(b"\x00\x01")
    with pytest.raises(BundleError, match=f"{SIGNATURE_FILE} cannot be read as JSON"):
        load_bundle(path, trusted_keys=[key])
