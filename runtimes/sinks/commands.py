"""Running commands received over MQTT and answering each one on the response topic.

Commands run one at a time on a worker thread of their own, never on the MQTT network
thread (a slow handler there would stall PUBACKs). Every command gets exactly one answer
per delivery: "rejected" if it is malformed, else what the handler returns. QoS 1 may
deliver a command twice; a request_id seen recently is answered again from memory without
running the handler a second time. With MQTT 5, a ResponseTopic/CorrelationData on the
command is honoured; otherwise answers go to ``<machine>/command/response``.

Payloads over ``messages.MAX_COMMAND_BYTES`` or nested deeper than
``messages.MAX_COMMAND_DEPTH`` are refused before any JSON parsing. Anything that goes wrong
while parsing, running or answering a command is answered ("rejected" or "error", with the
reason) and logged in one line (the traceback only at DEBUG), so the requester never waits
on silence; ``refused`` counts the "rejected" answers for the health report.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from factoryedge.errors import ConfigError, FactoryEdgeError
from factoryedge.runtimes import messages as msg

log = logging.getLogger(__name__)

CommandCallback = Callable[[msg.Command], "msg.CommandReply | dict | None"]
# publish(topic, body, correlation_data or None)
Publish = Callable[[str, bytes, "bytes | None"], None]
_RECENT_REQUESTS = 256
MAX_MESSAGE = 1024  # an answer quotes at most this much (a refused payload can be 64 KiB)


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class CommandDispatcher:
    """Queue of received command messages, worked off by one thread calling ``callback``."""

    def __init__(self, identity: msg.Identity, topics: msg.Topics, callback: CommandCallback, publish: Publish,
                 opener: Callable[[bytes], msg.Command] | None = None):
        self.identity = identity
        self.opener = opener  # command_auth.CommandAuthority.open for signed commands; else parse_command
        self.topics = topics
        self.callback = callback
        self._publish = publish
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers: OrderedDict[str, bytes] = OrderedDict()
        self.received = 0
        self.refused = 0  # answered "rejected": malformed, over the limits, unknown, or refused by the handler
        self._thread = threading.Thread(target=self._loop, name="factoryedge-mqtt-commands", daemon=True)
        self._thread.start()

    def submit(self, message: Any) -> None:
        """Queue a paho ``MQTTMessage`` (called on the network thread; does not block)."""
        self._queue.put(message)

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self.handle(message.payload, getattr(message, "properties", None))
            except Exception as e:  # noqa: BLE001 - last resort: handle() answers everything it can
                log.error("mqtt command handling failed: %s: %s", type(e).__name__, _short(str(e)))

    def handle(self, payload: bytes, properties: Any = None) -> None:
        """Parse, run and answer one command message; never raises, always answers (if it can publish)."""
        self.received += 1
        topic, correlation = self.topics.command_response, None
        try:
            if properties is not None and getattr(properties, "ResponseTopic", None):
                topic = properties.ResponseTopic
                correlation = getattr(properties, "CorrelationData", None)
        except Exception as e:  # noqa: BLE001 - odd MQTT 5 properties still get an answer on the default topic
            log.warning("mqtt command properties unreadable (%s: %s); answering on %s", type(e).__name__, e, topic)
        rid, name = None, None
        try:
            try:
                command = (self.opener or msg.parse_command)(payload)
            except msg.CommandRefused as e:
                rid = e.request_id
                raise
            rid, name = command.request_id, command.command
            if rid is not None and rid in self._answers:
                log.info("mqtt command repeated request_id=%s; answering again", rid)
                self._publish(topic, self._answers[rid], correlation)
                return
            log.info("mqtt command received command=%s request_id=%s args=%s%s", name, rid, command.args,
                     f" signed by {command.signer}" if command.signer else "")
            reply = self._run(command)
        except ConfigError as e:
            log.warning("mqtt command rejected request_id=%s: %s", rid, _short(str(e)))
            reply = msg.CommandReply(status="rejected", message=str(e))
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the requester hears why
            log.error("mqtt command failed request_id=%s: %s: %s", rid, type(e).__name__, _short(str(e)))
            log.debug("mqtt command failure", exc_info=True)
            reply = msg.CommandReply(status="error", message=f"internal error: {type(e).__name__}: {e}")
        if reply.status == "rejected":
            self.refused += 1
        self._answer(topic, correlation, rid, name, reply)

    def _answer(self, topic: str, correlation: bytes | None, rid: str | None, name: str | None,
                reply: msg.CommandReply) -> None:
        try:
            body = msg.command_response(self.identity, request_id=rid, command=name, status=reply.status,
                                       message=_short(reply.message, MAX_MESSAGE),
                                       result=reply.result).to_bytes()
        except Exception as e:  # noqa: BLE001 - e.g. a handler result that is not JSON: say so instead
            log.error("mqtt command answer could not be built request_id=%s: %s: %s", rid, type(e).__name__,
                      _short(str(e)))
            body = msg.command_response(self.identity, request_id=rid, command=name, status="error",
                                       message=_short(_ascii(f"answer not publishable: {type(e).__name__}: {e}"),
                                                      MAX_MESSAGE)).to_bytes()
        if rid is not None and reply.status != "rejected":
            self._answers[rid] = body
            while len(self._answers) > _RECENT_REQUESTS:
                self._answers.popitem(last=False)
        try:
            self._publish(topic, body, correlation)
        except Exception as e:  # noqa: BLE001 - e.g. an invalid ResponseTopic: the command thread goes on
            log.error("mqtt command answer not published request_id=%s topic=%r: %s: %s", rid, _short(str(topic)),
                      type(e).__name__, _short(str(e)))

    def _run(self, command: msg.Command) -> msg.CommandReply:
        try:
            out = self.callback(command)
        except (FactoryEdgeError, ValueError) as e:
            return msg.CommandReply(status="error", message=str(e))
        except Exception as e:  # noqa: BLE001 - reported to the requester; the traceback only at DEBUG
            log.error("mqtt command handler failed command=%s: %s: %s", command.command, type(e).__name__,
                      _short(str(e)))
            log.debug("mqtt command handler failure", exc_info=True)
            return msg.CommandReply(status="error", message=f"internal error: {e.__class__.__name__}: {e}")
        if out is None:
            return msg.CommandReply(status="ok")
        if isinstance(out, dict):
            return msg.CommandReply(status="ok", result=out)
        if isinstance(out, msg.CommandReply):
            return out
        log.error("mqtt command handler returned %r; expected None, a dict or a CommandReply", out)
        return msg.CommandReply(status="error", message=f"handler returned a {type(out).__name__}")
