"""The device's small HTTP server: the operator page, its JSON API and Prometheus ``/metrics``.

    GET  /                     the operator page (runtimes/plant/static/operator.html, .js, .css)
    GET  /api/state?since=T    LiveState.snapshot(T): card, threshold, state, timeline bins after T ...
    GET  /api/rejects?limit=N  the reject archive's newest N entries with their image URLs
    GET  /rejects/<file>       one file the archive lists (nothing else resolves)
    GET  /metrics              Prometheus text format (404 when the profile turns metrics off)
    POST /api/threshold        {"threshold": x} with "Authorization: Bearer <token>"

Built on the standard library's ``ThreadingHTTPServer``: a Jetson runtime stays light, a page
polled once a second by a few operators and a scrape every few seconds need no framework,
and it adds no dependency to audit on a device that sits on the plant network. Every
request runs on its own daemon thread and only reads ``live`` (whose writes take one short
lock per scored batch), so neither a slow browser nor a stuck scrape can slow or stop
scoring. The one write, a threshold change, goes through ``execute``: the same validation
and handlers as an MQTT command.

Changing the threshold needs the operator's token, read once at start from
``operator_token_file``; without that file the page is read-only (403). Tokens are
compared in constant time and never logged. Errors are JSON ``{"error": ...}``; a request
that breaks a handler gets a 500 with a generic message (the traceback goes to the log).
Access lines are logged at DEBUG.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from factoryedge.errors import ConfigError
from factoryedge.runtimes.plant.config import read_operator_token

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ASSETS = {"/": ("operator.html", "text/html; charset=utf-8"),
          "/operator.js": ("operator.js", "text/javascript; charset=utf-8"),
          "/operator.css": ("operator.css", "text/css; charset=utf-8")}
MAX_BODY = 4096  # a threshold change is a few dozen bytes
MAX_REJECTS = 200
_IMAGE_TYPES = {".png": "image/png", ".json": "application/json"}
# the page loads only its own files: no CDN (the device has no internet), no inline script
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class HttpError(Exception):
    """Answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WebServer:
    """Serves one program's ``live`` state; ``start()`` binds and returns, ``close()`` stops.

    ``config`` is the profile's ``WebConfig``; ``execute(name, args, origin)`` runs a command
    and returns a ``CommandReply``; ``archive`` is a ``RejectArchive`` (inspection) or None.
    Port 0 binds any free port; ``url`` says which once started.
    """

    def __init__(self, config: Any, live: Any, execute: Any, archive: Any = None) -> None:
        self.config, self.live, self.execute, self.archive = config, live, execute, archive
        self.token = read_operator_token(config.operator_token_file) if config.operator_token_file else None
        self.metrics = None
        if config.metrics:
            from factoryedge.runtimes.plant.metrics import MetricsExporter

            self.metrics = MetricsExporter(live)  # a missing prometheus_client fails here, at start
        self.assets: dict[str, tuple[bytes, str]] = {}
        if config.page:
            for route, (name, ctype) in ASSETS.items():
                self.assets[route] = ((STATIC / name).read_bytes(), ctype)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise ConfigError("the web server is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def start(self) -> WebServer:
        try:
            cls = _Server6 if ":" in self.config.host else _Server
            server = cls((self.config.host, self.config.port), _Handler)
        except OSError as e:
            raise ConfigError(f"web: cannot listen on {self.config.host}:{self.config.port} ({e.strerror or e}); "
                              "choose a free port (web.port, 0 for any) or another web.host") from None
        server.app = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="factoryedge-web", daemon=True)
        self._thread.start()
        log.info("web server at %s (page %s, metrics %s, threshold changes %s)", self.url,
                 "on" if self.assets else "off", "on" if self.metrics else "off",
                 "with the operator token" if self.token else "off: read-only")
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- routes (called on the request threads) ------------------------------------------------

    def get(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        if path in ASSETS:
            if path not in self.assets:
                raise HttpError(404, "the operator page is off (web.page: false)")
            body, ctype = self.assets[path]
            return 200, body, ctype
        if path == "/api/state":
            since = _number(query, "since", None)
            return _json(200, self.live.snapshot(since))
        if path == "/api/rejects":
            return _json(200, self.rejects(int(_number(query, "limit", 20, 1, MAX_REJECTS, integer=True))))
        if path.startswith("/rejects/"):
            return self.reject_file(unquote(path[len("/rejects/"):]))
        if path == "/metrics":
            if self.metrics is None:
                raise HttpError(404, "metrics are off (web.metrics: false)")
            body, ctype = self.metrics.render()
            return 200, body, ctype
        raise HttpError(404, f"no such page {path!r}; try /, /api/state, /api/rejects or /metrics")

    def rejects(self, limit: int) -> dict[str, Any]:
        if self.archive is None:
            return {"archive": False, "rejects": []}
        out = []
        for entry in self.archive.recent(limit):
            r, files = entry["record"], entry["files"]
            out.append({"part_id": r.get("part_id"), "score": r.get("score"), "threshold": r.get("threshold"),
                        "verdict": r.get("verdict"), "reason": r.get("reason"), "time_utc": r.get("time_utc"),
                        "latency_ms": r.get("latency_ms"), "model_version": r.get("model_version"),
                        "frame": "/rejects/" + quote(files["frame"]),
                        "heatmap": "/rejects/" + quote(files["heatmap"]) if "heatmap" in files else None})
        return {"archive": True, "rejects": out}

    def reject_file(self, name: str) -> tuple[int, bytes, str]:
        path = self.archive.file(name) if self.archive is not None and "/" not in name else None
        if path is None:
            raise HttpError(404, f"{name!r} is not a file of the reject archive")
        try:
            return 200, path.read_bytes(), _IMAGE_TYPES.get(path.suffix, "application/octet-stream")
        except OSError:  # evicted between the check and the read
            raise HttpError(404, f"{name!r} is no longer in the reject archive") from None

    def post(self, path: str, headers: Any, body: bytes) -> tuple[int, bytes, str]:
        if path != "/api/threshold":
            raise HttpError(404, f"no such endpoint {path!r}; POST /api/threshold changes the threshold")
        if self.token is None:
            raise HttpError(403, "this device's page is read-only: set web.operator_token_file in the profile "
                                 "to allow threshold changes")
        given = headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            raise HttpError(401, "a valid operator token is needed: send 'Authorization: Bearer <token>'")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, 'the body must be JSON like {"threshold": 4.2}') from None
        if not isinstance(data, dict) or set(data) != {"threshold"}:
            raise HttpError(400, f'the body must be exactly {{"threshold": <number>}}, got {_short(data)}')
        value = data["threshold"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise HttpError(400, f"threshold must be a finite number, got {_short(value)}")
        # the token authenticated the operator: allowed even where MQTT commands must be signed
        reply = self.execute("set_threshold", {"threshold": float(value)}, "operator page", authenticated=True)
        status = {"ok": 200, "accepted": 202, "rejected": 400}.get(reply.status, 500)
        return _json(status, {"status": reply.status, "message": reply.message, "result": reply.result})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung client never holds up the program's exit

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a browser that went away mid-answer (reset, broken pipe): not worth a traceback on stderr
        log.debug("web: connection from %s ended with an error", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "factoryedge"
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection frees its thread

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(lambda app, url: app.get(url.path, parse_qs(url.query, keep_blank_values=True)))

    def do_POST(self) -> None:  # noqa: N802
        def post(app: WebServer, url: Any) -> tuple[int, bytes, str]:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise HttpError(411, "send the body with a Content-Length") from None
            if not 0 <= length <= MAX_BODY:
                raise HttpError(413, f"a body of {length} bytes is too large; at most {MAX_BODY}")
            return app.post(url.path, self.headers, self.rfile.read(length))

        self._answer(post)

    def _answer(self, route: Any) -> None:
        app: WebServer = self.server.app  # type: ignore[attr-defined]
        try:
            if app._server is None:  # a browser's keep-alive connection outlived close()
                self.close_connection = True
                raise HttpError(503, "the device program is stopping")
            status, body, ctype = route(app, urlsplit(self.path))
        except HttpError as e:
            status, body, ctype = _json(e.status, {"error": str(e)})
        except Exception:  # noqa: BLE001 - a broken request must get an answer, and never a traceback
            log.exception("web: %s %s failed", self.command, self.path.split("?")[0])
            status, body, ctype = _json(500, {"error": "internal error; see the device log"})
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="factoryedge operator"')
        if self.command == "POST" and status >= 400:
            # a refused body may not have been read: the connection cannot carry another request
            self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # malformed request lines and unsupported methods: JSON like every other answer
        body = json.dumps({"error": message or HTTPStatus(code).phrase}).encode()
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # the request line and status only: headers (and so the token) are never logged
        log.debug("web %s " + format, self.address_string(), *args)


def _json(status: int, data: Any) -> tuple[int, bytes, str]:
    try:
        text = json.dumps(data, allow_nan=False, default=str)
    except ValueError:  # a NaN or infinite score: null, since a browser's JSON.parse refuses NaN
        text = json.dumps(_finite(data), allow_nan=False, default=str)
    return status, text.encode(), "application/json"


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def _number(query: dict[str, list[str]], key: str, default: Any, lo: float = -math.inf, hi: float = math.inf,
            integer: bool = False) -> Any:
    values = query.get(key)
    if not values or values[-1] == "":
        return default
    try:
        value = int(values[-1]) if integer else float(values[-1])
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not lo <= value <= hi:
        what = "an integer" if integer else "a number"
        bounds = f" from {lo:g} to {hi:g}" if math.isfinite(lo) else ""
        raise HttpError(400, f"{key}={_short(values[-1])} is not valid; give {what}{bounds}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


