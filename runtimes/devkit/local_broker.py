"""A throw-away MQTT broker on loopback for the demo and for trying a device on a desk.

Prefers the ``mosquitto`` binary; where it is absent, an embedded amqtt broker (MQTT 3.1.1
only) runs in a background thread. Never for production: a plant runs its own broker.
"""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from factoryedge.errors import SinkError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class LocalBroker:
    """``start()`` then ``uri``; ``protocol`` is "5" for Mosquitto, "3.1.1" for amqtt.

    ``mosquitto_options`` adds lines to Mosquitto's configuration (e.g. ``{"max_queued_messages": 0}``
    so a benchmark's burst is not cut at the default 1000 queued messages per subscriber).
    """

    def __init__(self, prefer: str = "auto", mosquitto_options: dict[str, object] | None = None):
        if prefer not in ("auto", "mosquitto", "amqtt"):
            raise SinkError(f"broker kind {prefer!r} is not one of auto, mosquitto, amqtt")
        self.prefer = prefer
        self.mosquitto_options = dict(mosquitto_options or {})
        self.port = free_port()
        self.kind = ""
        self.protocol = "5"
        self._proc: subprocess.Popen | None = None
        self._loop = None
        self._dir = Path(tempfile.mkdtemp(prefix="factoryedge-broker-"))

    @property
    def uri(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        binary = None
        if self.prefer != "amqtt":
            binary = shutil.which("mosquitto") or next(
                (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)
            if binary is None and self.prefer == "mosquitto":
                raise SinkError("the mosquitto binary is not installed (apt-get install mosquitto)")
        if binary:
            conf = self._dir / "mosquitto.conf"
            extra = "".join(f"{k} {v}\n" for k, v in self.mosquitto_options.items())
            conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n{extra}")
            self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                          stderr=open(self._dir / "mosquitto.log", "wb"))
            self.kind = f"mosquitto ({binary})"
        else:
            self._start_amqtt()
            why = "as asked" if self.prefer == "amqtt" else "no mosquitto binary found"
            self.kind, self.protocol = f"embedded amqtt ({why})", "3.1.1"
        if not _wait_listening(self.port, 10.0) or (self._proc is not None and self._proc.poll() is not None):
            self.stop()
            raise SinkError(f"the local {self.kind} broker did not start listening on port {self.port} "
                            "(another program may hold the port)")
        return self

    def _start_amqtt(self) -> None:
        try:
            import asyncio

            from amqtt.broker import Broker
        except ImportError:
            raise SinkError(
                "no MQTT broker here: install mosquitto (apt-get install mosquitto) or pip install amqtt"
            ) from None
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        # amqtt reports our readiness probe (connect, then close) as a failed client session.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        loop = asyncio.new_event_loop()
        broker = Broker(config, loop=loop)

        self._started = threading.Event()
        self._start_error: BaseException | None = None

        def serve():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(broker.start())
            except Exception as e:  # noqa: BLE001 - reported by start(): e.g. the port is taken
                self._start_error = e
                self._started.set()
                loop.close()
                return
            self._started.set()
            loop.run_forever()
            # stopped: let the broker end its tasks before the loop goes away
            loop.run_until_complete(broker.shutdown())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="factoryedge-amqtt", daemon=True)
        self._thread.start()
        # Wait for amqtt's own verdict: with its logs silenced, a failed bind would otherwise
        # pass the readiness probe whenever some other program listens on the port.
        if not self._started.wait(10.0) or self._start_error is not None:
            raise SinkError(f"the embedded amqtt broker could not start on 127.0.0.1:{self.port}: "
                            f"{self._start_error or 'no answer within 10 s'}")
        self._loop = loop

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop = None
        shutil.rmtree(self._dir, ignore_errors=True)
