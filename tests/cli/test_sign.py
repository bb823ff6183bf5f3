"""Signed bundles: ``keygen``, ``sign``, ``show``'s signer, and ``run`` with ``model.trusted_keys``
refusing an unsigned, foreign-signed or tampered bundle at ``--check`` and at start."""
from __future__ import annotations

import json
import stat

import pytest
import yaml

from factoryedge.bundle import PACKED_SUFFIX, load_bundle, pack_bundle
from factoryedge.errors import BundleError
from factoryedge.signing import SIGNATURE_FILE, load_public_key
from tests.cli.test_cli import assert_one_line_error, cli
from tests.cli.test_run_errors import profile
from tests.cli.test_run_inspection import write_profile as write_station_profile
from tests.support.image_bundle import make_image_bundle
from tests.support.tiny_bundle import tiny_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two key pairs: ``ours`` (trusted by the device) and ``theirs`` (not)."""
    d = tmp_path_factory.mktemp("keys")
    for name in ("ours", "theirs"):
        r = cli("keygen", "--out", d, "--name", name)
        assert r.returncode == 0, r.stderr
    return d


def fp(keys, name: str) -> str:
    return load_public_key(keys / f"{name}.pub").fingerprint


def signed(tmp_path, keys, name="b", key="ours"):
    b = tiny_bundle(tmp_path / name)
    r = cli("sign", b.path, "--key", keys / f"{key}.key")
    assert r.returncode == 0, r.stderr
    return b.path


def trusting_profile(tmp_path, bundle_path, keys):
    p = profile(tmp_path, bundle_path)
    raw = yaml.safe_load(p.read_text())
    raw["model"]["trusted_keys"] = [str(keys / "ours.pub")]
    p.write_text(yaml.safe_dump(raw))
    return p


def test_keygen_writes_an_owner_only_private_key_and_never_overwrites(tmp_path):
    r = cli("keygen", "--out", tmp_path / "k")
    assert r.returncode == 0, r.stderr
    private, public = tmp_path / "k" / "signing.key", tmp_path / "k" / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    assert load_public_key(public).fingerprint in r.stdout
    before = private.read_bytes()
    assert_one_line_error(cli("keygen", "--out", tmp_path / "k"), "signing.key already exists", "never overwrites")
    assert private.read_bytes() == before


def test_sign_then_show_names_the_signer(tmp_path, keys):
    b = tiny_bundle(tmp_path / "b")
    shown = cli("show", b.path)
    assert shown.returncode == 0 and "signature   unsigned" in shown.stdout
    r = cli("sign", b.path, "--key", keys / "ours.key")
    assert r.returncode == 0, r.stderr
    assert fp(keys, "ours") in r.stdout and (b.path / SIGNATURE_FILE).is_file()
    sig = json.loads((b.path / SIGNATURE_FILE).read_text())
    assert sig["schema"] == "factoryedge.signature/1" and sig["key_fingerprint"] == fp(keys, "ours")
    shown = cli("show", b.path)
    assert f"signed by {fp(keys, 'ours')} (not checked: no trusted_keys)" in shown.stdout, shown.stdout
    shown = cli("show", b.path, "--trusted-key", keys / "ours.pub")
    assert f"signed by {fp(keys, 'ours')} (trusted)" in shown.stdout
    assert_one_line_error(cli("show", b.path, "--trusted-key", keys / "theirs.pub"),
                          f"signed by key {fp(keys, 'ours')}", "not among the trusted keys", fp(keys, "theirs"))
    inspected = cli("inspect", b.path)  # the old name still answers, with the signer
    assert inspected.returncode == 0 and f"signed by {fp(keys, 'ours')}" in inspected.stdout


def test_edited_manifest_never_reads_as_signed(tmp_path, keys):
    path = signed(tmp_path, keys)
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"threshold": 2.0', '"threshold": 99.0'))
    shown = cli("show", path)
    assert shown.returncode == 0 and "manifest.json was changed after signing" in shown.stdout
    r = cli("run", profile(tmp_path, path), "--check")  # no trusted_keys: runs, but says so plainly
    assert r.returncode == 0 and "manifest.json was changed after signing" in r.stdout


@pytest.mark.parametrize("key_file, says", [
    ("nope.key", ["signing key", "does not exist"]),
    ("ours.pub", ["it is a public key; sign with the .key file"]),
    ("junk.key", ["not usable", "unencrypted PEM private key"]),
])
def test_a_wrong_or_missing_signing_key_is_one_line(tmp_path, keys, key_file, says):
    (keys / "junk.key").write_text("not a key\n")
    b = tiny_bundle(tmp_path / "b")
    r = cli("sign", b.path, "--key", keys / key_file)
    assert_one_line_error(r, key_file, *says)
    assert not (b.path / SIGNATURE_FILE).exists()


def test_a_directory_as_signing_key_is_one_line(tmp_path):
    assert_one_line_error(cli("sign", tiny_bundle(tmp_path / "b").path, "--key", tmp_path),
                          "is a directory, not a key file")


@pytest.mark.parametrize("key, says", [
    ("missing.pub", ["model.trusted_keys.0", "missing.pub does not exist"]),
    ("ours.key", ["model.trusted_keys.0", "is a private key; give the device the .pub file only"]),
    ("junk.pub", ["model.trusted_keys.0", "not a PEM public key"]),
])
def test_bad_trusted_key_file_names_the_profile_key(tmp_path, keys, key, says):
    (tmp_path / "junk.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    (tmp_path / "ours.key").write_bytes((keys / "ours.key").read_bytes())
    p = profile(tmp_path, signed(tmp_path, keys))
    raw = yaml.safe_load(p.read_text())
    raw["model"]["trusted_keys"] = [key]  # relative to the profile file
    p.write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("run", p, "--check"), "device.yaml", *says)


def test_trusted_keys_relative_to_the_profile_accept_a_signed_bundle(tmp_path, keys):
    path = signed(tmp_path, keys)
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "ours.pub").write_bytes((keys / "ours.pub").read_bytes())
    p = profile(tmp_path, path)
    raw = yaml.safe_load(p.read_text())
    raw["model"]["trusted_keys"] = ["trusted/ours.pub"]
    p.write_text(yaml.safe_dump(raw))
    r = cli("run", p, "--check")
    assert r.returncode == 0, r.stderr
    assert f"bundle tiny 0.0.1 verified, signed by {fp(keys, 'ours')} (trusted)" in r.stdout


def _unsigned(tmp_path, keys):
    return tiny_bundle(tmp_path / "b").path


def _foreign(tmp_path, keys):
    return signed(tmp_path, keys, key="theirs")


def _threshold_edited(tmp_path, keys):
    path = signed(tmp_path, keys)
    manifest = path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"threshold": 2.0', '"threshold": 99.0'))
    return path


def _artefact_changed(tmp_path, keys):
    path = signed(tmp_path, keys)
    model = bytearray((path / "model.onnx").read_bytes())
    model[-1] ^= 0x01
    (path / "model.onnx").write_bytes(bytes(model))
    return path


@pytest.mark.parametrize("make, says", [
    (_unsigned, ["is not signed", "only bundles signed by a trusted key"]),
    (_foreign, ["is signed by key", "not among the trusted keys"]),
    (_threshold_edited, ["manifest.json was changed after it was signed"]),
    (_artefact_changed, ["model.onnx has been modified or corrupted"]),
], ids=["unsigned", "foreign", "threshold-edited", "artefact-changed"])
def test_trusting_device_refuses_at_check_and_at_start(tmp_path, keys, make, says):
    path = make(tmp_path, keys)
    p = trusting_profile(tmp_path, path, keys)
    assert_one_line_error(cli("run", p, "--check"), f"bundle {path}", *says)
    started = cli("run", p, timeout=120)  # refused before the sensor or the broker is touched
    assert_one_line_error(started, f"bundle {path}", *says)
    assert "/dev/ttyFE_NOPE" not in started.stderr


def test_inspection_station_refuses_an_unsigned_image_bundle(tmp_path, keys):
    bundle = make_image_bundle(tmp_path / "img")
    p = write_station_profile(tmp_path, bundle.path, "file:///nowhere.avi")
    raw = yaml.safe_load(p.read_text())
    raw["model"]["trusted_keys"] = [str(keys / "ours.pub")]
    p.write_text(yaml.safe_dump(raw))
    assert_one_line_error(cli("run", p, "--check"), f"bundle {bundle.path} is not signed")
    assert_one_line_error(cli("run", p, timeout=120), f"bundle {bundle.path} is not signed")
    assert cli("sign", bundle.path, "--key", keys / "ours.key").returncode == 0
    r = cli("run", p, "--check")
    assert r.returncode == 0 and f"signed by {fp(keys, 'ours')} (trusted)" in r.stdout, r.stderr


def test_packed_bundle_carries_its_signature(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("FACTORYEDGE_CACHE", str(tmp_path / "cache"))
    packed = pack_bundle(signed(tmp_path, keys))
    assert packed.suffix == PACKED_SUFFIX
    r = cli("run", trusting_profile(tmp_path, packed, keys), "--check")
    assert r.returncode == 0 and f"signed by {fp(keys, 'ours')} (trusted)" in r.stdout, r.stderr

    # a packed file signed in place: unsigned and refused before, trusted after
    plain = pack_bundle(tiny_bundle(tmp_path / "plain").path)
    assert_one_line_error(cli("run", trusting_profile(tmp_path, plain, keys), "--check"), f"bundle {plain} is not signed")
    assert cli("sign", plain, "--key", keys / "ours.key").returncode == 0
    shown = cli("show", plain, "--trusted-key", keys / "ours.pub")
    assert shown.returncode == 0 and f"signed by {fp(keys, 'ours')} (trusted)" in shown.stdout, shown.stderr


def test_stale_signature_is_neither_packed_nor_kept_by_a_re_export(tmp_path, keys):
    path = _threshold_edited(tmp_path, keys)
    with pytest.raises(BundleError, match="changed after it was signed .* sign it again"):
        pack_bundle(path)
    assert not path.with_suffix(PACKED_SUFFIX).exists()
    again = tiny_bundle(path)  # a re-export writes the bundle afresh, without the old signature
    assert not (again.path / SIGNATURE_FILE).exists()
    assert "signature   unsigned" in cli("show", again.path).stdout
    load_bundle(again.path)
