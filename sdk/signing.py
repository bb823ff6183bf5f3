"""Ed25519 signatures over a bundle's manifest, with ``cryptography`` (no hand-written crypto).

The signature covers the exact bytes of ``manifest.json``; the manifest holds the sha256 of
every artefact, so one signature covers the whole bundle. It travels in the bundle as
``manifest.sig``, a small JSON file::

    {"schema": "factoryedge.signature/1", "algorithm": "ed25519", "signed_file": "manifest.json",
     "key_fingerprint": "3f1c0a9e5b7d2c44", "public_key": "<base64, 32 raw bytes>",
     "signature": "<base64, 64 raw bytes>"}

A key's fingerprint is the first 16 hex digits of the sha256 of its 32 raw public-key bytes.
The public key in the file only says who signed; whether that signer is trusted is decided
against the device's ``model.trusted_keys`` (PEM public keys written by ``factoryedge keygen``),
by the whole key, never by the fingerprint alone.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from factoryedge.errors import BundleError, ConfigError

SIGNATURE_FILE = "manifest.sig"
SIGNED_FILE = "manifest.json"
SIGNATURE_SCHEMA = "factoryedge.signature/1"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


def fingerprint(raw_public_key: bytes) -> str:
    """First 16 hex digits of sha256(raw 32-byte Ed25519 public key)."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A trusted signer: the raw Ed25519 public key and the file it came from (for messages)."""

    raw: bytes
    source: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signature:
    """A parsed ``manifest.sig``."""

    public_key: PublicKey
    signature: bytes

    @property
    def fingerprint(self) -> str:
        return self.public_key.fingerprint


# -- keys ----------------------------------------------------------------------------------


def generate_keypair(directory: str | Path, name: str = "signing") -> tuple[Path, Path, str]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub`` (PEM) under ``directory``.

    Refuses to overwrite either file: a replaced private key silently orphans every device
    that trusts the old one. Returns (private path, public path, fingerprint).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(directory)
    private, public = d / f"{name}{PRIVATE_SUFFIX}", d / f"{name}{PUBLIC_SUFFIX}"
    for p in (private, public):
        if p.exists():
            raise ConfigError(f"{p} already exists; keygen never overwrites a key (choose another --out or --name)")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create key directory {d}: {e.strerror}") from None
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key()
    pub_pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        # O_EXCL: never follow or replace a file created meanwhile; 0600 from the first byte.
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        fd = os.open(public, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(pub_pem)
    except FileExistsError as e:
        raise ConfigError(f"{e.filename} already exists; keygen never overwrites a key") from None
    except OSError as e:
        raise ConfigError(f"cannot write key file {e.filename or d}: {e.strerror}") from None
    return private, public, fingerprint(raw)


def _read_key_file(path: Path, what: str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {p} is a directory, not a key file") from None
    except OSError as e:
        raise ConfigError(f"{what} {p} cannot be read: {e.strerror}") from None


def load_private_key(path: str | Path):
    """The Ed25519 private key in a PEM file written by ``factoryedge keygen``; ConfigError otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = _read_key_file(Path(path), "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        hint = "it is a public key; sign with the .key file" if b"PUBLIC KEY" in data else \
            "expected an unencrypted PEM private key written by 'factoryedge keygen'"
        raise ConfigError(f"signing key {path} is not usable: {hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is a {type(key).__name__}, not an Ed25519 key "
                          "(make one with 'factoryedge keygen')")
    return key


def load_public_key(path: str | Path) -> PublicKey:
    """An Ed25519 public key from a PEM file (``NAME.pub`` from keygen); ConfigError otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(Path(path), "trusted key")
    if b"PRIVATE KEY" in data:
        # a device needs only the public half; a private key there is a leak waiting to happen
        raise ConfigError(f"trusted key {path} is a private key; give the device the .pub file only")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(f"trusted key {path} is not a PEM public key (expected a .pub file "
                          "written by 'factoryedge keygen')") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"trusted key {path} is a {type(key).__name__}, not an Ed25519 key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(raw, str(path))


def load_public_keys(paths: Sequence[str | Path]) -> list[PublicKey]:
    return [load_public_key(p) for p in paths]


# -- signing and checking ------------------------------------------------------------------


def sign_directory(directory: str | Path, private_key) -> Signature:
    """Write ``manifest.sig`` for the bundle directory's current ``manifest.json``."""
    from cryptography.hazmat.primitives import serialization

    d = Path(directory)
    data = (d / SIGNED_FILE).read_bytes()
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = Signature(PublicKey(raw), private_key.sign(data))
    body = {
        "schema": SIGNATURE_SCHEMA,
        "algorithm": "ed25519",
        "signed_file": SIGNED_FILE,
        "key_fingerprint": sig.fingerprint,
        "public_key": base64.b64encode(raw).decode("ascii"),
        "signature": base64.b64encode(sig.signature).decode("ascii"),
    }
    tmp = d / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, d / SIGNATURE_FILE)
    return sig


def read_signature(directory: str | Path, label: str | Path | None = None) -> Signature | None:
    """The bundle's parsed ``manifest.sig``, or None when it has none; BundleError when malformed."""
    path = Path(directory) / SIGNATURE_FILE
    if not path.exists():
        return None
    where = f"bundle {label or directory}: {SIGNATURE_FILE}"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{where} cannot be read as JSON: {e}") from None
    if not isinstance(obj, dict) or obj.get("schema") != SIGNATURE_SCHEMA:
        found = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
        raise BundleError(f"{where} has schema {found!r}; this factoryedge reads {SIGNATURE_SCHEMA!r}")
    if obj.get("algorithm") != "ed25519" or obj.get("signed_file") != SIGNED_FILE:
        raise BundleError(f"{where} signs {obj.get('signed_file')!r} with {obj.get('algorithm')!r}; "
                          f"expected {SIGNED_FILE!r} with 'ed25519'")
    try:
        raw = base64.b64decode(obj["public_key"], validate=True)
        signature = base64.b64decode(obj["signature"], validate=True)
    except (KeyError, TypeError, binascii.Error) as e:
        raise BundleError(f"{where} lacks a valid base64 public_key and signature ({e})") from None
    if len(raw) != 32 or len(signature) != 64:
        raise BundleError(f"{where}: an Ed25519 public key has 32 bytes and a signature 64; "
                          f"found {len(raw)} and {len(signature)}")
    sig = Signature(PublicKey(raw, SIGNATURE_FILE), signature)
    if obj.get("key_fingerprint") != sig.fingerprint:
        raise BundleError(f"{where}: key_fingerprint {obj.get('key_fingerprint')!r} is not that of its "
                          f"public_key ({sig.fingerprint})")
    return sig


def signature_matches(directory: str | Path, sig: Signature) -> bool:
    """Whether ``sig`` is a valid signature of the directory's ``manifest.json`` by the key it names."""
    return sig.public_key.verify(sig.signature, (Path(directory) / SIGNED_FILE).read_bytes())


def require_trusted(directory: str | Path, trusted: Sequence[PublicKey], label: str | Path | None = None) -> Signature:
    """BundleError unless the bundle is signed by one of ``trusted`` and its manifest is unchanged since."""
    name = label or directory
    known = ", ".join(k.fingerprint for k in trusted)
    sig = read_signature(directory, name)
    if sig is None:
        raise BundleError(f"bundle {name} is not signed; only bundles signed by a trusted key "
                          f"({known}) are accepted: sign it with 'factoryedge sign BUNDLE --key KEY'")
    if not any(k.raw == sig.public_key.raw for k in trusted):
        raise BundleError(f"bundle {name} is signed by key {sig.fingerprint}, which is not among the "
                          f"trusted keys ({known})")
    if not signature_matches(directory, sig):
        raise BundleError(f"bundle {name}: {SIGNED_FILE} was changed after it was signed by {sig.fingerprint} "
                          "(its signature does not match)")
    return sig


def describe_signature(directory: str | Path, trusted: Sequence[PublicKey] | None = None) -> str:
    """One phrase for ``show`` and ``run --check``: who signed the bundle, and whether that was checked.

    Without trusted keys the signature is still checked against the key it names, so a
    manifest edited after signing never reads as signed.
    """
    sig = read_signature(directory)
    if sig is None:
        return "unsigned"
    if not signature_matches(directory, sig):
        return f"signed by {sig.fingerprint}, but {SIGNED_FILE} was changed after signing (signature does not match)"
    if not trusted:
        return f"signed by {sig.fingerprint} (not checked: no trusted_keys)"
    if any(k.raw == sig.public_key.raw for k in trusted):
        return f"signed by {sig.fingerprint} (trusted)"
    return f"signed by {sig.fingerprint} (NOT a trusted key)"
