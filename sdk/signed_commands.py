"""Signed command envelopes: a plant system signs, a device that asks for it verifies (Ed25519).

The envelope carries the command as a string, so the signature covers its exact UTF-8
bytes and no JSON canonicalisation is needed on either side::

    {"schema": "factoryedge.signed_command/1", "key": "<key fingerprint>",
     "signature": "<base64 Ed25519 over the bytes of 'signed'>",
     "signed": "{\"command\": \"set_threshold\", \"args\": {\"threshold\": 4.2}, \"request_id\": \"r-17\",
                \"device\": \"factoryedge/v1/plant-1/line-3/press-7\", \"t\": 1796600000.5,
                \"nonce\": \"5f0c...\"}"}

``device`` is the machine's topic base, so a command signed for one machine is refused by
every other; ``t`` (epoch seconds) and ``nonce`` (16-64 hex digits) let the device refuse a
stale or replayed copy (see ``factoryedge.runtimes.command_auth``). The keys are the
bundle-signing kind (``factoryedge keygen``), normally a separate pair for operators.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from typing import Any

from factoryedge.errors import ConfigError
from factoryedge.signing import PublicKey, fingerprint

SIGNED_COMMAND = "factoryedge.signed_command/1"
NONCE = re.compile(r"^[0-9a-f]{16,64}$")


def sign_command(private_key: Any, command: str, args: dict[str, Any] | None, device: str,
                 request_id: str | None = None, t: float | None = None, nonce: str | None = None) -> bytes:
    """The envelope (UTF-8 JSON bytes) for ``command`` to the machine whose topic base is ``device``."""
    from cryptography.hazmat.primitives import serialization

    inner: dict[str, Any] = {"command": command, "args": args or {}, "device": device,
                             "t": time.time() if t is None else float(t), "nonce": nonce or secrets.token_hex(16)}
    if request_id is not None:
        inner["request_id"] = request_id
    signed = json.dumps(inner, separators=(",", ":"))
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sig = private_key.sign(signed.encode("utf-8"))
    return json.dumps({"schema": SIGNED_COMMAND, "key": fingerprint(raw),
                       "signature": base64.b64encode(sig).decode("ascii"), "signed": signed}).encode("utf-8")


def open_envelope(envelope: dict[str, Any], trusted: list[PublicKey]) -> tuple[dict[str, Any], PublicKey]:
    """The signed inner command of a parsed envelope and the trusted key that signed it; ConfigError otherwise.

    Checks the signature only; the caller checks ``device``, ``t`` and ``nonce``.
    """
    unknown = sorted(set(envelope) - {"schema", "key", "signature", "signed"})
    if unknown:
        raise ConfigError(f"signed command has unknown fields {unknown}; valid: schema, key, signature, signed")
    signed, key_id, sig_text = envelope.get("signed"), envelope.get("key"), envelope.get("signature")
    if not isinstance(signed, str) or not isinstance(key_id, str) or not isinstance(sig_text, str):
        raise ConfigError("signed command needs text fields 'signed', 'key' and 'signature' "
                          "(make one with 'factoryedge sign-command')")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("signed command: 'signature' is not base64") from None
    key = next((k for k in trusted if k.fingerprint == key_id), None)
    if key is None:
        raise ConfigError(f"signed command: key {key_id[:32]!r} is not among this device's trusted command keys")
    if len(sig) != 64 or not key.verify(sig, signed.encode("utf-8")):
        raise ConfigError(f"signed command: the signature does not match (key {key.fingerprint}); the command "
                          "was changed after signing or signed with another key")
    try:
        inner = json.loads(signed)
    except ValueError as e:
        raise ConfigError(f"signed command: 'signed' is not JSON ({e})") from None
    if not isinstance(inner, dict):
        raise ConfigError("signed command: 'signed' must hold a JSON object")
    return inner, key
