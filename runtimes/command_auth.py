"""Authorised commands: a device whose profile asks for it runs only signed, fresh, unreplayed commands.

    MQTT payload --bounded--> envelope --signature (trusted key)--> inner command
        --device is this machine, t within max_age_s, nonce unseen--> the usual command checks

With ``commands.require: signed`` every command on the MQTT command topic must be a
``factoryedge.signed_command/1`` envelope (``factoryedge.signed_commands``). Anything else
is refused with the reason (answered ``rejected``, counted in health's ``commands_refused``)
and never run. A nonce is remembered for twice the allowed age, so a copy replayed inside
the window is refused as a replay and one replayed later as stale. The device's clock
matters: keep it synchronised (NTP/PTP), or widen ``max_age_s``.
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict

from factoryedge.errors import ConfigError
from factoryedge.runtimes import messages as msg
from factoryedge.signed_commands import NONCE, SIGNED_COMMAND, open_envelope
from factoryedge.signing import PublicKey

_INNER = {"command", "args", "request_id", "device", "t", "nonce"}
_MAX_NONCES = 100_000  # a bound on memory whatever the rate; far above any plant's command rate


class CommandAuthority:
    """Opens command payloads for a device that requires signed commands; see the module doc."""

    def __init__(self, trusted: list[PublicKey], device: str, max_age_s: float = 60.0) -> None:
        if not trusted:
            raise ConfigError("signed commands need at least one trusted command key (commands.trusted_keys)")
        self.trusted = list(trusted)
        self.device = device
        self.max_age_s = float(max_age_s)
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when it was accepted (monotonic)
        self._lock = threading.Lock()

    def open(self, data: bytes | str) -> msg.Command:
        """The command in a signed envelope, or ``messages.CommandRefused`` saying why it will not run."""
        text = msg.bounded_command_text(data)
        rid = None
        try:
            envelope = msg.json_object(text, "command", '{"schema": "factoryedge.signed_command/1", ...}')
            if envelope.get("schema") != SIGNED_COMMAND:
                rid = msg.request_id_of(envelope)
                raise ConfigError("this device runs only signed commands (its profile sets commands.require: "
                                  "signed); make one with 'factoryedge sign-command'")
            signed = envelope.get("signed")
            if isinstance(signed, str):  # to match a refusal to its request; the id is not trusted for anything
                rid = msg.scan_request_id(signed.encode("utf-8", "replace"))
            inner, key = open_envelope(envelope, self.trusted)
            rid = msg.request_id_of(inner)
            self._check_fresh(inner)
        except ConfigError as e:
            raise msg.CommandRefused(str(e), rid) from None
        plain = {k: v for k, v in inner.items() if k not in ("device", "t", "nonce")}
        command = msg.parse_command(json.dumps(plain))  # the usual checks of name and arguments
        return msg.Command(command.command, command.args, command.request_id, signer=key.fingerprint)

    def _check_fresh(self, inner: dict) -> None:
        unknown = sorted(set(inner) - _INNER)
        if unknown:
            raise ConfigError(f"signed command has unknown fields {unknown}; valid: {', '.join(sorted(_INNER))}")
        if inner.get("device") != self.device:
            raise ConfigError(f"signed command is for {str(inner.get('device'))[:120]!r}, not this machine "
                              f"({self.device})")
        t, nonce = inner.get("t"), inner.get("nonce")
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise ConfigError("signed command needs 't', its signing time in epoch seconds")
        age = time.time() - float(t)
        if abs(age) > self.max_age_s:
            raise ConfigError(f"signed command is stale: signed {age:+.0f} s from this device's clock, more than "
                              f"the {self.max_age_s:g} s allowed (commands.max_age_s); check both clocks")
        if not isinstance(nonce, str) or not NONCE.match(nonce):
            raise ConfigError("signed command needs 'nonce', 16-64 lowercase hex digits")
        now = time.monotonic()
        with self._lock:
            while self._seen and (now - next(iter(self._seen.values())) > 2 * self.max_age_s
                                  or len(self._seen) > _MAX_NONCES):
                self._seen.popitem(last=False)
            if nonce in self._seen:
                raise ConfigError(f"signed command replayed: nonce {nonce} was already used")
            self._seen[nonce] = now
