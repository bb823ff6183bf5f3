"""The operator page's server over real loopback HTTP: a real WebServer on port 0, a LiveState fed
by the test, a real RejectArchive on disk, and an ``execute`` that validates as the shell does."""
from __future__ import annotations

import json
import logging
import sys
import time

import numpy as np
import pytest

from factoryedge.errors import ConfigError
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.inspection.archive import RejectArchive
from factoryedge.runtimes.messages import Identity
from factoryedge.runtimes.plant.config import WebConfig
from factoryedge.runtimes.plant.live import LiveState
from factoryedge.runtimes.plant.web import WebServer
from factoryedge.scoring import ScoreRule
from tests.runtimes.plant.helpers import request

IDENTITY = Identity(site="s1", line="l1", machine="press-3", device_id="edge-3")
TOKEN = "op-token-5f1c9a77e2"


class Program:
    """The part of a device program the server talks to: its live state and its command path."""

    def __init__(self, kind: str = "condition_monitoring") -> None:
        self.live = LiveState(IDENTITY, kind)
        self.live.set_threshold(2.0)
        self.calls: list[tuple[str, dict, str, bool]] = []

    def execute(self, name: str, args: dict, origin: str, authenticated: bool = False) -> msg.CommandReply:
        self.calls.append((name, args, origin, authenticated))
        try:
            command = msg.parse_command(json.dumps({"command": name, "args": args}))
        except msg.CommandRefused as e:
            return msg.CommandReply("rejected", str(e))
        if command.args["threshold"] <= 0:
            return msg.CommandReply("rejected", f"threshold {command.args['threshold']} must be above 0")
        self.live.set_threshold(command.args["threshold"])
        return msg.CommandReply("ok", "threshold changed", {"new": command.args["threshold"]})


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(program: Program, archive=None, **web) -> WebServer:
        server = WebServer(WebConfig(port=0, **web), program.live, program.execute, archive=archive).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def token_file(tmp_path, token=TOKEN):
    path = tmp_path / "operator.token"
    path.write_text(token + "\n")
    return path


def test_page_state_and_metrics_endpoints(serve):
    program = Program()
    rule = ScoreRule(threshold=2.0)
    program.live.add_scores(time.time(), np.array([0.5, 3.0], np.float32), rule, 0.002)
    server = serve(program)
    assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0/")

    page = request(server.url, "GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert b'id="timeline"' in page.body and b"/operator.js" in page.body and b"http" not in page.body.lower()
    for asset in ("/operator.js", "/operator.css"):
        assert request(server.url, "GET", asset).status == 200

    state = request(server.url, "GET", "/api/state").json()
    assert state["windows_scored"] == 2 and state["threshold"] == 2.0 and len(state["timeline"]) == 1
    assert state["identity"]["machine"] == "press-3"
    later = request(server.url, "GET", f"/api/state?since={state['timeline'][0]['t'] + 0.5}").json()
    assert later["timeline"] == []

    metrics = request(server.url, "GET", "/metrics")
    assert metrics.status == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert b"factoryedge_windows_scored_total 2.0" in metrics.body

    for path, word in (("/api/state?since=yesterday", "since"), ("/api/rejects?limit=0", "limit"),
                       ("/api/rejects?limit=x", "limit"), ("/nope", "/api/state")):
        r = request(server.url, "GET", path)
        assert r.status in (400, 404) and word in r.json()["error"], (path, r.body)
    assert request(server.url, "GET", "/api/rejects").json() == {"archive": False, "rejects": []}


def test_page_and_metrics_can_be_turned_off(serve):
    server = serve(Program(), page=False, metrics=False)
    for path, word in (("/", "web.page"), ("/operator.js", "web.page"), ("/metrics", "web.metrics")):
        r = request(server.url, "GET", path)
        assert r.status == 404 and word in r.json()["error"]
    assert request(server.url, "GET", "/api/state").status == 200


def test_threshold_is_read_only_without_a_token_file(serve):
    program = Program()
    server = serve(program)
    r = request(server.url, "POST", "/api/threshold", b'{"threshold": 3}',
                {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    assert r.status == 403 and "read-only" in r.json()["error"] and "operator_token_file" in r.json()["error"]
    assert program.calls == [] and program.live.threshold == 2.0


def test_threshold_change_needs_the_right_token(serve, tmp_path, caplog):
    program = Program()
    server = serve(program, operator_token_file=token_file(tmp_path))
    body = b'{"threshold": 3.5}'
    with caplog.at_level(logging.DEBUG):
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            r = request(server.url, "POST", "/api/threshold", body, headers)
            assert r.status == 401 and "operator token" in r.json()["error"], headers
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert program.calls == [] and program.live.threshold == 2.0

        r = request(server.url, "POST", "/api/threshold", body, {"Authorization": f"Bearer {TOKEN}"})
        assert r.status == 200, r.body
        assert r.json() == {"status": "ok", "message": "threshold changed", "result": {"new": 3.5}}
    # authenticated: the token stands for the operator, so even a signed-commands device takes it
    assert program.calls == [("set_threshold", {"threshold": 3.5}, "operator page", True)]
    assert program.live.threshold == 3.5
    assert request(server.url, "GET", "/api/state").json()["threshold"] == 3.5
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_bad_threshold_requests_get_clear_json_errors(serve, tmp_path):
    program = Program()
    server = serve(program, operator_token_file=token_file(tmp_path))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [(b"{not json", 400, "JSON"), (b"\xff\xfe", 400, "JSON"), (b"[1, 2]", 400, "exactly"),
             (b'{"threshold": 1, "extra": 2}', 400, "exactly"), (b'{"threshold": "high"}', 400, "finite number"),
             (b'{"threshold": true}', 400, "finite number"), (b'{"threshold": 1e999}', 400, "finite number"),
             (b"x" * 5000, 413, "too large")]
    for body, status, word in cases:
        r = request(server.url, "POST", "/api/threshold", body, auth)
        assert r.status == status and word in r.json()["error"], (body[:20], r.status, r.body)
    # valid JSON the command itself refuses: 400 with the command's own message
    r = request(server.url, "POST", "/api/threshold", b'{"threshold": -1}', auth)
    assert r.status == 400 and r.json()["status"] == "rejected" and "-1" in r.json()["message"]
    r = request(server.url, "POST", "/api/other", b"{}", auth)
    assert r.status == 404 and "/api/threshold" in r.json()["error"]
    r = request(server.url, "PUT", "/api/threshold", b"{}", auth)
    assert r.status == 501 and "error" in json.loads(r.body)
    assert program.live.threshold == 2.0


def test_a_short_or_missing_token_file_fails_at_start(tmp_path):
    program = Program()
    with pytest.raises(ConfigError, match="cannot read"):
        WebServer(WebConfig(port=0, operator_token_file=tmp_path / "absent"), program.live, program.execute)
    with pytest.raises(ConfigError, match="at least 16 characters"):
        WebServer(WebConfig(port=0, operator_token_file=token_file(tmp_path, "abc")), program.live, program.execute)


def test_rejects_are_listed_newest_first_and_only_archived_files_are_served(serve, tmp_path):
    archive = RejectArchive(tmp_path / "rejects", max_items=10)
    image = np.zeros((48, 64, 3), np.uint8)
    for k in range(3):
        image[:, :] = 40 * (k + 1)
        record = {"part_id": f"p-{k}", "verdict": "reject", "reason": "score", "score": 0.5 + k,
                  "threshold": 0.4, "time_utc": f"2026-01-01T00:00:0{k}Z"}
        archive.submit(image.copy(), record, f"p-{k}", heatmap=np.linspace(0, 1, 48 * 64).reshape(48, 64),
                       t_wall=1_700_000_000 + k)
    assert archive.flush(10)
    (tmp_path / "rejects" / "stray.png").write_bytes(b"not an archive entry")
    (tmp_path / "secret.txt").write_text("outside the archive")
    server = serve(Program("inspection"), archive=archive)

    listed = request(server.url, "GET", "/api/rejects?limit=2").json()
    assert listed["archive"] is True
    assert [x["part_id"] for x in listed["rejects"]] == ["p-2", "p-1"]
    first = listed["rejects"][0]
    assert first["score"] == 2.5 and first["reason"] == "score" and first["time_utc"].endswith("02Z")
    for key in ("frame", "heatmap"):
        r = request(server.url, "GET", first[key])
        assert r.status == 200 and r.headers["content-type"] == "image/png" and r.body[:4] == b"\x89PNG"

    stem = first["frame"].rsplit("/", 1)[1][: -len(".png")]
    for path in ("/rejects/stray.png", "/rejects/../secret.txt", "/rejects/..%2Fsecret.txt",
                 "/rejects/%2E%2E/secret.txt", f"/rejects/{stem}.png/../../secret.txt",
                 f"/rejects/..%2Frejects%2F{stem}.png", "/rejects/%2Fetc%2Fpasswd", "/rejects/",
                 f"/rejects/.tmp-{stem}.png"):
        r = request(server.url, "GET", path)
        assert r.status == 404 and b"outside" not in r.body and b"root:" not in r.body, path
        assert "reject archive" in r.json()["error"] or "no such page" in r.json()["error"], path
    archive.close()


def test_non_finite_scores_do_not_break_the_json(serve):
    program = Program()
    program.live.add_scores(time.time(), np.array([np.nan], np.float32), ScoreRule(threshold=2.0), 0.001)
    state = request(serve(program).url, "GET", "/api/state")
    assert state.status == 200 and state.json()["last_score"] is None


def test_a_kept_alive_connection_is_refused_once_the_server_closes():
    import http.client

    program = Program()
    server = WebServer(WebConfig(port=0), program.live, program.execute).start()
    host, port = server.url[len("http://"):-1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/api/state")
        assert conn.getresponse().status == 200
        server.close()
        server.close()  # idempotent
        try:
            conn.request("GET", "/api/state")
            r = conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            return  # the connection went with the server: equally fine
        assert r.status == 503 and b"stopping" in r.read()
    finally:
        conn.close()


def test_metrics_without_prometheus_client_name_the_extra(monkeypatch, serve):
    from factoryedge.errors import BackendUnavailableError

    for name in ("prometheus_client", "prometheus_client.core"):
        monkeypatch.setitem(sys.modules, name, None)
    program = Program()
    with pytest.raises(BackendUnavailableError, match=r"factoryedge\[ui\]"):
        WebServer(WebConfig(port=0), program.live, program.execute)
    # the page alone needs only the standard library
    server = serve(program, metrics=False)
    assert request(server.url, "GET", "/").status == 200 and request(server.url, "GET", "/metrics").status == 404


def test_binds_an_ipv6_address(serve):
    try:
        server = serve(Program(), host="::1")
    except ConfigError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    assert server.url.startswith("http://[::1]:")
    assert request(server.url, "GET", "/api/state").json()["kind"] == "condition_monitoring"
