"""The command dispatcher on its own thread: every command message gets exactly one answer,
whatever goes wrong while parsing or running it, and nothing leaves a traceback in the log."""
from __future__ import annotations

import json
import logging
import queue
from types import SimpleNamespace

import pytest

from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.sinks.commands import MAX_MESSAGE, CommandDispatcher
from tests.runtimes.sinks.conftest import IDENTITY, TOPICS


@pytest.fixture
def dispatcher():
    """(dispatcher, answers queue, calls list); the callback fails as the command's args say."""
    answers: queue.Queue = queue.Queue()
    calls: list[msg.Command] = []

    def callback(cmd: msg.Command):
        calls.append(cmd)
        if cmd.args.get("bundle") == "boom":
            raise RuntimeError("handler bug")
        if cmd.args.get("bundle") == "unjsonable":
            return {"value": object()}
        if cmd.args.get("bundle") == "surrogate":
            return msg.CommandReply("ok", "loaded \udc80")
        return {"ran": cmd.command}

    def publish(topic: str, body: bytes, correlation: bytes | None) -> None:
        if b"publish-fails" in body:
            raise OSError("socket gone")
        answers.put((topic, json.loads(body)))

    d = CommandDispatcher(IDENTITY, TOPICS, callback, publish)
    yield d, answers, calls
    d.stop()


def send(d: CommandDispatcher, answers: queue.Queue, payload: bytes, properties=None) -> dict:
    d.submit(SimpleNamespace(payload=payload, properties=properties, topic=TOPICS.command))
    topic, body = answers.get(timeout=10)
    assert topic == TOPICS.command_response
    return body


def no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def test_hostile_payloads_are_answered_with_a_reason_and_never_run(dispatcher, caplog):
    caplog.set_level(logging.DEBUG, logger="factoryedge.runtimes.sinks.commands")
    caplog.set_level(logging.INFO)
    d, answers, calls = dispatcher
    cases = [
        (b"[" * 100_000, None, "at most 65536 bytes"),
        (b'{"request_id": "deep", "command": "reload", "x": ' + b"[" * 50_000, "deep", "nested deeper than 32"),
        (b'{"command": "reload", "request_id": "big", "p": "' + b"z" * 70_000 + b'"}', "big", "at most 65536"),
        (b'{"command": "reload", "request_id": "r-1"', None, "not valid UTF-8 JSON"),
        (b"\xc3\x28", None, "not valid UTF-8 JSON"),
        (b'{"command": "self_destruct", "request_id": "r-2"}', "r-2", "unknown command 'self_destruct'"),
    ]
    for payload, rid, reason in cases:
        answer = send(d, answers, payload)
        assert answer["status"] == "rejected" and answer["request_id"] == rid, answer
        assert reason in answer["message"] and len(answer["message"]) <= MAX_MESSAGE + 40
    assert calls == [] and d.refused == len(cases) and d.received == len(cases)
    assert send(d, answers, b'{"command": "reload", "request_id": "ok-1"}')["status"] == "ok"
    assert [c.request_id for c in calls] == ["ok-1"] and d.refused == len(cases)
    # the DEBUG level is on: even there, a refusal logs one line and no traceback
    no_traceback(caplog)


def test_an_unforeseen_failure_while_parsing_is_answered_as_an_error(dispatcher, monkeypatch, caplog):
    d, answers, calls = dispatcher

    def recursing(data):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(msg, "parse_command", recursing)
    answer = send(d, answers, b'{"command": "reload"}')
    assert answer["status"] == "error" and "RecursionError" in answer["message"] and calls == []
    assert "mqtt command failed" in caplog.text
    no_traceback(caplog)


def test_a_failing_handler_and_an_unpublishable_result_are_answered_as_errors(dispatcher, caplog):
    d, answers, calls = dispatcher
    answer = send(d, answers, b'{"command": "reload", "args": {"bundle": "boom"}, "request_id": "b-1"}')
    assert answer["status"] == "error" and answer["message"] == "internal error: RuntimeError: handler bug"
    answer = send(d, answers, b'{"command": "reload", "args": {"bundle": "unjsonable"}, "request_id": "b-2"}')
    assert answer["status"] == "error" and answer["request_id"] == "b-2" and "not publishable" in answer["message"]
    answer = send(d, answers, b'{"command": "reload", "args": {"bundle": "surrogate"}, "request_id": "b-3"}')
    assert answer["status"] == "error" and answer["request_id"] == "b-3" and "not publishable" in answer["message"]
    assert "handler bug" in caplog.text
    no_traceback(caplog)


def test_the_command_thread_survives_a_failed_publish_and_odd_properties(dispatcher, caplog):
    d, answers, calls = dispatcher

    class Odd:
        @property
        def ResponseTopic(self):  # noqa: N802 - paho's property name
            raise ValueError("bad property")

    d.submit(SimpleNamespace(payload=b'{"command": "reload", "request_id": "publish-fails"}', properties=None))
    answer = send(d, answers, b'{"command": "reload", "request_id": "after"}', properties=Odd())
    assert answer["status"] == "ok" and answer["request_id"] == "after"
    assert "answer not published" in caplog.text and "properties unreadable" in caplog.text
    no_traceback(caplog)
