"""Writing, reading and verifying model bundles.

A bundle is a directory with ``manifest.json``, ``model.onnx``, optional ``golden.npz`` and
baseline, and ``engines/``; it may be packed into one ``.febundle`` file (a tar archive).
Loading checks the schema version, the manifest's structure and the sha256 of every
artefact, and fails with a ``BundleError`` that names the file and what is wrong. Given
trusted keys, it first checks the detached signature ``manifest.sig`` over ``manifest.json``
(``factoryedge.signing``), which the artefact hashes extend to the whole bundle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from factoryedge.errors import BundleError
from factoryedge.manifest import SCHEMA_VERSION, Manifest
from factoryedge.signing import (
    SIGNATURE_FILE,
    PublicKey,
    Signature,
    read_signature,
    require_trusted,
    sign_directory,
    signature_matches,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PACKED_SUFFIX = ".febundle"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def format_validation_error(err: ValidationError) -> str:
    """Pydantic's errors as 'key.path: reason' pairs on one line."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


@dataclass
class Bundle:
    """A verified bundle on disk. Construct it with ``load_bundle``."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.file

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def require_kind(self, kind: str) -> None:
        """Fail clearly when, say, an image bundle is given to the vibration runtime."""
        if self.manifest.kind != kind:
            raise BundleError(
                f"bundle {self.path} holds a {self.manifest.kind!r} model "
                f"({self.manifest.name} {self.manifest.version}); this needs a {kind!r} bundle"
            )

    def golden(self) -> dict[str, np.ndarray]:
        """Golden inputs and the reference outputs recorded at export time."""
        if not self.manifest.golden:
            raise BundleError(f"bundle {self.path} has no golden data")
        with np.load(self.path / self.manifest.golden) as data:
            return {k: data[k] for k in data.files}

    def artefact(self, relative: str) -> Path:
        return self.path / relative


def write_bundle(directory: str | Path, manifest: Manifest, files: dict[str, Path | bytes]) -> Bundle:
    """Write a bundle directory: artefacts first, then the manifest with their sha256.

    The bundle is assembled in a sibling temporary directory and renamed into place, so a
    crash never leaves a half-written bundle under the final name. An existing bundle at
    ``directory`` is replaced, its signature with it: a new manifest needs a new signature.
    """
    target = Path(directory)
    was_signed = (target / SIGNATURE_FILE).is_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hashes = {}
        for rel, content in files.items():
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                dest.write_bytes(content)
            else:
                shutil.copyfile(content, dest)
            hashes[rel] = sha256_file(dest)
        (staging / "engines").mkdir(exist_ok=True)
        final = manifest.model_copy(update={"artefacts": dict(sorted(hashes.items()))})
        missing = [f for f in _referenced_files(final) if f not in hashes]
        if missing:
            raise BundleError(f"the manifest references {missing}, which were not given to write_bundle")
        (staging / MANIFEST).write_text(final.model_dump_json(indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote bundle %s (%s %s)", target, final.name, final.version)
    if was_signed:
        log.warning("bundle %s was signed; the new bundle is not: sign it again with 'factoryedge sign'", target)
    return Bundle(target, final)


def _referenced_files(m: Manifest) -> list[str]:
    files = [m.model.file]
    if m.golden:
        files.append(m.golden)
    if m.baseline:
        files.append(m.baseline.file)
    return files


def load_bundle(path: str | Path, verify: bool = True, trusted_keys: Sequence[PublicKey] | None = None) -> Bundle:
    """Read a bundle directory or packed ``.febundle`` file, verifying schema and hashes.

    With ``trusted_keys`` (non-empty), the bundle must also carry a signature by one of them
    that matches its ``manifest.json``, checked before anything in the manifest is used.
    """
    p = given = Path(path)
    if not p.exists():
        raise BundleError(f"model bundle {p} does not exist; give a bundle directory or a {PACKED_SUFFIX} file")
    if p.is_file():
        p = _unpack(p)
    manifest_path = p / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{p} is not a model bundle: it has no {MANIFEST}")
    if trusted_keys:
        require_trusted(p, trusted_keys, label=given)
    try:
        raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object, found {type(raw).__name__}")
    version = raw.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path} has schema_version {version!r}; this factoryedge reads schema_version "
            f"{SCHEMA_VERSION} (a newer bundle needs a newer factoryedge)"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        raise BundleError(f"{manifest_path} is malformed: {format_validation_error(e)}") from None
    bundle = Bundle(p, manifest)
    if verify:
        verify_bundle(bundle)
    return bundle


def verify_bundle(bundle: Bundle) -> None:
    """Check that every artefact the manifest lists exists and has the recorded sha256."""
    m = bundle.manifest
    unlisted = [f for f in _referenced_files(m) if f not in m.artefacts]
    if unlisted:
        raise BundleError(f"bundle {bundle.path}: {unlisted} are used but have no sha256 in the manifest")
    for rel, expected in m.artefacts.items():
        file = bundle.path / rel
        problem = None
        if not file.is_file():
            problem = "is missing"
        else:
            actual = sha256_file(file)
            if actual != expected:
                problem = f"has been modified or corrupted (sha256 {actual[:12]}..., manifest says {expected[:12]}...)"
        if problem is None:
            continue
        if rel.startswith("engines/"):
            # An engine is a cache that the device rebuilds from model.onnx; a damaged plan
            # must not make the model itself unusable. The engine lookup re-verifies it.
            log.warning("bundle %s: engine %s %s; it will be rebuilt, never loaded", bundle.path, rel, problem)
            continue
        if problem == "is missing":
            raise BundleError(f"bundle {bundle.path} is incomplete: {rel} is missing")
        raise BundleError(f"bundle {bundle.path}: {rel} {problem}")


def pack_bundle(directory: str | Path, output: str | Path | None = None) -> Path:
    """Pack a verified bundle directory into one ``.febundle`` file for copying to devices.

    The signature travels in the file; a stale one (the manifest changed after signing) is
    refused rather than shipped, since every device that trusts the key would refuse it.
    """
    bundle = load_bundle(directory)
    sig = read_signature(bundle.path)
    if sig is not None and not signature_matches(bundle.path, sig):
        raise BundleError(f"bundle {bundle.path}: {MANIFEST} changed after it was signed by {sig.fingerprint}; "
                          f"sign it again ('factoryedge sign {bundle.path} --key KEY') or delete {SIGNATURE_FILE}")
    out = Path(output) if output else bundle.path.with_suffix(PACKED_SUFFIX)
    with tarfile.open(out, "w") as tar:
        for item in sorted(bundle.path.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(bundle.path)), recursive=False)
    return out


def sign_bundle(path: str | Path, private_key) -> Signature:
    """Verify a bundle (directory or packed file), then write its ``manifest.sig`` with ``private_key``.

    A packed file is signed inside: unpacked next to itself, signed, repacked and renamed
    over the original, so a crash leaves the old file whole. An existing signature is replaced.
    """
    p = Path(path)
    if not p.is_file():
        bundle = load_bundle(p)
        return sign_directory(bundle.path, private_key)
    if not tarfile.is_tarfile(p):
        raise BundleError(f"{p} is neither a bundle directory nor a packed {PACKED_SUFFIX} bundle")
    with tempfile.TemporaryDirectory(prefix=f".{p.name}.", dir=p.parent) as tmp:
        unpacked = Path(tmp) / "bundle"
        _extract(p, unpacked)
        bundle = load_bundle(unpacked)
        sig = sign_directory(bundle.path, private_key)
        os.replace(pack_bundle(unpacked, Path(tmp) / p.name), p)
    return sig


def _extract(file: Path, dest: Path) -> None:
    try:
        with tarfile.open(file) as tar:
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise BundleError(f"packed bundle {file} cannot be unpacked: {e}") from None


def _unpack(file: Path) -> Path:
    """Extract a packed bundle next to a cache key of its hash, once."""
    if not tarfile.is_tarfile(file):
        raise BundleError(f"{file} is neither a bundle directory nor a packed {PACKED_SUFFIX} bundle")
    digest = sha256_file(file)[:16]
    cache = Path(os.environ.get("FACTORYEDGE_CACHE", Path.home() / ".cache" / "factoryedge")) / "bundles"
    dest = cache / f"{file.stem}-{digest}"
    if (dest / MANIFEST).is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache))
    try:
        _extract(file, staging)
    except BundleError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(staging, dest)
    return dest
