"""IP cameras over RTSP through FFmpeg: ``rtsp://cam:554/stream?stall_s=2``.

Credentials never go in the URI, because URIs are logged: give ``username=`` (or
``username_env=`` / ``username_file=``) and ``password_env=`` / ``password_file=`` as
options; they are read once, when the camera is made, so a missing one fails ``--check``.
Query keys that are not factoryedge options (e.g. Axis ``?videocodec=h264``) are the
camera's own and are passed on as written. Opens and reads are bounded by ``stall_s``,
so a dead stream is noticed and reconnected.
"""
from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from factoryedge.errors import ConfigError, SourceError
from factoryedge.runtimes.cameras.base import LIVE_OPTIONS
from factoryedge.runtimes.cameras.opencv import CaptureCamera, CaptureReader, has_backend, import_cv2, live_reader
from factoryedge.runtimes.options import as_text, read_secret

_USER = ("username", "username_env", "username_file")
_PASSWORD = ("password_env", "password_file")
_SECRET_KEYS = {"password", "pass", "passwd", "pwd"}  # refused in the query: they would be logged


class RtspCamera(CaptureCamera):
    """An RTSP stream; see the module docstring for credentials and the camera's own query keys."""

    SCHEME: ClassVar[str] = "rtsp"
    LIVE: ClassVar[bool] = True
    OPTIONS = {**{k: as_text for k in _USER + _PASSWORD}, **LIVE_OPTIONS}

    def __init__(self, uri: str, **options: Any) -> None:
        self._query = ""  # the camera's own query keys, set by split()
        super().__init__(uri, **options)
        self._target = self._url()  # secrets read once, checked early

    def split(self, uri: str) -> tuple[str, dict[str, str]]:
        parts = urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise ConfigError(f"credentials in the URI ('rtsp://{parts.username or ''}"
                              f"{':***' if parts.password is not None else ''}@{parts.hostname}') are not allowed, "
                              "because URIs are logged; give username=NAME (or username_env=VAR / username_file=PATH) "
                              "and password_env=VAR or password_file=PATH as options instead")
        ours: dict[str, str] = {}
        theirs = []
        for piece in filter(None, parts.query.split("&")):
            key, _, value = (unquote_plus(x) for x in piece.partition("="))
            if key.lower() in _SECRET_KEYS:
                raise ConfigError(f"a {key}= query key in an rtsp:// URI is not allowed, because URIs are logged; "
                                  "use username=/username_env=/username_file= and password_env=/password_file=")
            if key in ours:
                raise ConfigError(f"option {key!r} is given twice in {uri!r}")
            if key in self.OPTIONS:
                ours[key] = value
            else:
                theirs.append(piece)  # passed on as written
        self._query = "&".join(theirs)
        return (parts.netloc + parts.path) if parts.hostname else "", ours

    def _url(self) -> str:
        """The URL handed to FFmpeg, with the credentials from the options; never logged."""
        user = read_secret(self.settings, "user name", _USER)
        password = read_secret(self.settings, "password", _PASSWORD)
        if password is not None and user is None:
            raise ConfigError("an rtsp password is given without a user name; add username=NAME (or username_env/_file)")
        netloc, _, path = self.location.partition("/")
        if user is not None:
            auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
            netloc = f"{auth}@{netloc}"
        return urlunsplit(("rtsp", netloc, "/" + path if path else "", self._query, ""))

    def open_reader(self) -> CaptureReader:
        cv2 = import_cv2()
        if not has_backend(cv2, "FFMPEG"):
            raise SourceError(f"camera {self.uri!r}: this OpenCV was built without FFmpeg, which rtsp:// needs")
        ms = int(self.stall_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 5000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        return live_reader(cv2, cap, self.uri, (
            "check the camera's address, port and stream path (try it with ffplay), the network, "
            "and the user name and password options"))
