"""Running commands received over MQTT and answering each one on the response topic.

Commands run one at a time on a worker thread of their own, never on the MQTT network
thread (a slow handler there would stall PUBACKs). Every command gets exactly one answer
per delivery: "rejected" if it is malformed, else what the handler returns. QoS 1 may
deliver a command twice; a request_id seen recently is answered again from memory without
running the handler a second time. With MQTT 5, a ResponseTopic/CorrelationData on the
command is honoured; otherwise answers go to ``<machine>/command/response``.
"""
from __future__ import annotations

import json
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


class CommandDispatcher:
    """Queue of received command messages, worked off by one thread calling ``callback``."""

    def __init__(self, identity: msg.Identity, topics: msg.Topics, callback: CommandCallback, publish: Publish):
        self.identity = identity
        self.topics = topics
        self.callback = callback
        self._publish = publish
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._answers: OrderedDict[str, bytes] = OrderedDict()
        self.received = 0
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
            except Exception:  # noqa: BLE001 - one bad command must not end command handling
                log.exception("mqtt command handling failed topic=%s", getattr(message, "topic", "?"))

    def handle(self, payload: bytes, properties: Any = None) -> None:
        """Parse, run and answer one command message."""
        self.received += 1
        topic, correlation = self.topics.command_response, None
        if properties is not None and getattr(properties, "ResponseTopic", None):
            topic = properties.ResponseTopic
            correlation = getattr(properties, "CorrelationData", None)
        rid, name = None, None
        try:
            try:
                rid = msg.request_id_of(json.loads(payload))
            except ValueError:
                pass  # parse_command below explains what is wrong with the payload
            command = msg.parse_command(payload)
            name = command.command
        except ConfigError as e:
            log.warning("mqtt command rejected request_id=%s: %s", rid, e)
            reply = msg.CommandReply(status="rejected", message=str(e))
        else:
            if rid is not None and rid in self._answers:
                log.info("mqtt command repeated request_id=%s; answering again", rid)
                self._publish(topic, self._answers[rid], correlation)
                return
            log.info("mqtt command received command=%s request_id=%s args=%s", name, rid, command.args)
            reply = self._run(command)
        body = msg.command_response(self.identity, request_id=rid, command=name, status=reply.status,
                                   message=reply.message, result=reply.result).to_bytes()
        if rid is not None and reply.status != "rejected":
            self._answers[rid] = body
            while len(self._answers) > _RECENT_REQUESTS:
                self._answers.popitem(last=False)
        self._publish(topic, body, correlation)

    def _run(self, command: msg.Command) -> msg.CommandReply:
        try:
            out = self.callback(command)
        except (FactoryEdgeError, ValueError) as e:
            return msg.CommandReply(status="error", message=str(e))
        except Exception as e:  # noqa: BLE001 - reported to the requester and logged with traceback
            log.exception("mqtt command handler failed command=%s", command.command)
            return msg.CommandReply(status="error", message=f"internal error: {e.__class__.__name__}: {e}")
        if out is None:
            return msg.CommandReply(status="ok")
        if isinstance(out, dict):
            return msg.CommandReply(status="ok", result=out)
        if isinstance(out, msg.CommandReply):
            return out
        log.error("mqtt command handler returned %r; expected None, a dict or a CommandReply", out)
        return msg.CommandReply(status="error", message=f"handler returned a {type(out).__name__}")
