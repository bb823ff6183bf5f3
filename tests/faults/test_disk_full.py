"""A full disk never stops the device: the outbox against a real space limit, a real Mosquitto
and a subscriber in a child process.

Each scenario runs twice: on a real file system that fills up (a 2 MiB tmpfs, mounted by the
test: skipped where mounting is not permitted) and on the outbox's own page budget (its
``max_bytes`` option, SQLite's ``max_page_count``), filled up by a second connection, as other
files fill a disk. Each prints ``produced N / delivered N / duplicated N``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import threading
import time
from urllib.parse import urlencode

import pytest

from factoryedge.errors import SinkError
from factoryedge.runtimes import messages as msg
from factoryedge.runtimes.sinks.mqtt import MqttSink
from tests.faults.report import report
from tests.support.broker import wait_until

IDENTITY = msg.Identity(site="plant1", line="press3", machine="m7", device_id="edge-full")
TOPICS = msg.Topics.for_identity(IDENTITY)
MAX_BYTES = 256 * 1024


class FileSystemFiller:
    """Fills the outbox's tmpfs with a file, as a growing log would; ``free`` deletes it."""

    def __init__(self, folder):
        self.path = folder / "filler"

    def fill(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for block in (65536, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * block)
                except OSError:
                    continue  # ENOSPC: go on with smaller blocks to take the last bytes too
        finally:
            os.close(fd)

    def free(self) -> None:
        self.path.unlink()


class PageFiller:
    """Fills the outbox file's page budget (``max_bytes``) through a second connection."""

    def __init__(self, path):
        self.path = path

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute(f"PRAGMA max_page_count={MAX_BYTES // db.execute('PRAGMA page_size').fetchone()[0]}")
        return db

    def fill(self) -> None:
        db = self._db()
        try:
            db.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
            for size in (3000, 500, 50, 1):
                try:
                    while True:
                        db.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
                except sqlite3.OperationalError as e:
                    assert "full" in str(e), e
        finally:
            db.close()

    def free(self) -> None:
        db = self._db()
        try:
            db.execute("DELETE FROM filler")
        finally:
            db.close()


@pytest.fixture(params=["tmpfs", "max_bytes"])
def limit(request, tmp_path):
    """(folder for the outbox, extra sink options, filler) for one kind of space limit."""
    if request.param == "tmpfs":
        folder = tmp_path / "fs"
        folder.mkdir()
        # Several times the WAL's checkpoint size (100 pages, ~400 KB): with 512 KiB, the space
        # that "returned" was at times less than the WAL grows into before it can checkpoint,
        # and the disk was full again (a flake under load, which makes more transactions).
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the max_bytes run covers the logic")
        yield folder, {}, FileSystemFiller(folder)
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder = tmp_path / "box"
        folder.mkdir()
        yield folder, {"max_bytes": str(MAX_BYTES)}, PageFiller(folder / "outbox.sqlite")


def sink_uri(broker, folder, **options) -> str:
    opts = {"site": IDENTITY.site, "line": IDENTITY.line, "machine": IDENTITY.machine,
            "device_id": IDENTITY.device_id, "outbox": str(folder / "outbox.sqlite"),
            "reconnect_min": "0.05", "reconnect_max": "0.3", **options}
    return f"{broker.url}?{urlencode(opts)}"


def anomaly(seq: int) -> msg.AnomalyPayload:
    now = time.time()
    return msg.anomaly_payload(IDENTITY, severity="warning", score=1.5, threshold=1.0, window_start=now - 1,
                               window_end=now, model_name="test", model_version="1",
                               details={"seq": seq, "pad": "x" * 3000})  # one to a page


class Producer:
    """Publishes numbered events without waiting, and knows which ones the sink took on."""

    def __init__(self, sink: MqttSink):
        self.sink = sink
        self.receipts: list[tuple[str, object]] = []

    def publish(self, n: int) -> list:
        out = []
        for _ in range(n):
            event = anomaly(len(self.receipts))
            receipt = self.sink.publish_anomaly(event, wait=False)
            self.receipts.append((event.event_id, receipt))
            out.append(receipt)
        return out

    def outcome(self, receipt) -> str:
        """'stored', 'sent' (not stored, sent directly) or 'lost'."""
        try:
            return "stored" if receipt.result(30) is not None else "sent"
        except SinkError:
            return "lost"

    def ids(self, *outcomes: str) -> set[str]:
        return {eid for eid, r in self.receipts if self.outcome(r) in outcomes}

    def publish_until(self, outcome: str, n: int, cap: int = 3000, before=lambda: None) -> list[str]:
        """Publish one at a time until ``n`` events ended as ``outcome``; their event_ids.

        A filled disk may still take a few events (a WAL that is reused in place, a page with
        room left), so the test publishes until the limit shows rather than assuming where.
        ``before`` runs before each event (a filler taking back what delivered events freed).
        """
        hits = []
        for _ in range(cap):
            before()
            receipt = self.publish(1)[0]
            if self.outcome(receipt) == outcome:
                hits.append(self.receipts[-1][0])
                if len(hits) == n:
                    return hits
        pytest.fail(f"only {len(hits)} of {cap} events ended {outcome!r}")


def received_ids(sub) -> list[str]:
    return [m.json()["event_id"] for m in sub.messages() if m.topic.endswith("/event/anomaly")]


def test_full_disk_keeps_publishing_and_delivers_every_stored_event(limit, broker, subscribe, caplog):
    folder, options, filler = limit
    sub = subscribe([TOPICS.anomaly])
    sink = MqttSink.from_uri(sink_uri(broker, folder, **options))
    producer = Producer(sink)
    try:
        assert sink.wait_connected(10)
        # 1. broker away: events wait in the outbox
        broker.stop()
        wait_until(lambda: not sink.stats().connected, 10, "the sink to notice the broker is gone")
        waiting = producer.publish(20)
        assert all(producer.outcome(r) == "stored" for r in waiting)
        # 2. the disk fills up while the broker is away: those events are lost, and say so
        filler.fill()
        with caplog.at_level(logging.WARNING, logger="factoryedge.runtimes.sinks.mqtt"):
            lost = producer.publish_until("lost", 5)
        assert all(eid in caplog.text for eid in lost), "each lost event_id is logged"
        # 3. the broker is back, the disk still full: the stored events drain ...
        broker.restart()
        stored = producer.ids("stored")
        sub.wait_for(lambda m: set(received_ids(sub)) >= stored, 20, "every stored event after the outage")
        # ... and new events still go out, directly, while they cannot be stored (the filler
        # takes back at once what delivered events free, as a growing log would)
        sent_directly = set(producer.publish_until("sent", 10, before=filler.fill))
        full = sink.stats()
        assert full.store_failed >= 15 and full.unstored_sent >= 10, full
        sub.wait_for(lambda m: set(received_ids(sub)) >= sent_directly, 20, "the events sent without the outbox")
        # 4. space returns: new events are stored again, and everything stored is delivered
        filler.free()
        wait_until(lambda: producer.outcome(producer.publish(1)[0]) == "stored", 20,
                   "the outbox to store events again once space returned")
        producer.publish(10)
        assert all(producer.outcome(r) == "stored" for _, r in producer.receipts[-10:])
        expected = producer.ids("stored", "sent")
        sub.wait_for(lambda m: set(received_ids(sub)) >= expected, 20, "every stored or sent event")
        assert sink.flush(20), "delivery marks held while the disk was full are committed once it is not"
        received = received_ids(sub)
        assert set(received) == expected  # nothing else: the lost ones were never sent
        report(f"disk full ({'tmpfs' if not options else 'max_bytes'})", len(producer.receipts), received)
    finally:
        sink.close(timeout=2)


def test_restart_on_a_full_disk_opens_the_outbox_and_drains_it(limit, broker, subscribe):
    folder, options, filler = limit
    sub = subscribe([TOPICS.anomaly])
    uri = sink_uri(broker, folder, **options)
    broker.stop()
    first = MqttSink.from_uri(uri)
    producer = Producer(first)
    producer.publish(20)
    left = producer.ids("stored")
    assert len(left) == 20
    first.close(timeout=1)  # the events stay in the outbox
    filler.fill()
    broker.restart()
    second = MqttSink.from_uri(uri)  # refused before: the open step always wrote user_version
    producer.sink = second
    # a full file system cannot even give SQLite its -shm file: the outbox opens read-only
    assert second.outbox.read_only == (not options)
    try:
        sub.wait_for(lambda m: set(received_ids(sub)) >= left, 20, "the events the first process left behind")
        filler.free()
        wait_until(lambda: producer.outcome(producer.publish(1)[0]) == "stored", 20,
                   "storing to resume once space returned")
        expected = producer.ids("stored", "sent")
        sub.wait_for(lambda m: set(received_ids(sub)) >= expected, 20, "every event")
        assert second.flush(20)
        received = received_ids(sub)
        assert set(received) == expected
        report(f"restart on a full disk ({'tmpfs' if not options else 'max_bytes'})", len(producer.receipts),
               received)
    finally:
        second.close(timeout=2)


def test_outbox_stays_small_with_nothing_pending(tmp_path, broker, subscribe):
    sub = subscribe([TOPICS.anomaly])
    sink = MqttSink.from_uri(sink_uri(broker, tmp_path))
    try:
        producer = Producer(sink)
        producer.publish(2000)
        sub.wait_for(lambda m: len(set(received_ids(sub))) >= 2000, 60, "2000 events")
        assert sink.flush(20)
        # compacted once the writer has been idle a moment: delivered rows gone, WAL truncated
        wait_until(lambda: sink.outbox.size_on_disk() <= 64 * 1024, 10, "the outbox to shrink")
        size = sink.outbox.size_on_disk()
        received = received_ids(sub)
        report("steady state", len(producer.receipts), received)
        print(f"outbox on disk with nothing pending after 2000 events: {size} bytes "
              f"(.sqlite + -wal + -shm)")
    finally:
        sink.close(timeout=2)


def test_monitor_keeps_scoring_while_the_outbox_is_full(tmp_path, broker, subscribe, sim_bundle):
    from factoryedge.runtimes.monitoring.program import ConditionMonitor
    from factoryedge.runtimes.profile import load_profile
    from tests.support.monitoring import alternating_recording, write_profile

    sub = subscribe(["factoryedge/v1/+/+/+/event/anomaly", "factoryedge/v1/+/+/+/health"])

    def seen(suffix: str) -> list[dict]:
        return [m.json() for m in sub.messages() if m.topic.endswith(suffix)]

    replay = alternating_recording(tmp_path, cycles=12)
    profile = load_profile(write_profile(tmp_path, sim_bundle, f"replay://{replay}?speed=4&block=512", broker,
                                         clear_windows=5))
    monitor = ConditionMonitor(profile)
    box, drainer = monitor.sink.outbox, monitor.sink._drainer
    with box._lock:  # the outbox gets a page budget, which a second connection then fills
        box.max_bytes = MAX_BYTES
        box._db.execute(f"PRAGMA max_page_count={MAX_BYTES // 4096}")
    PageFiller(box.path).fill()
    # Stored events are not sent for now (as if the broker were slow to take them), so they stay
    # and the outbox runs out of room while connected; an event that fits in a page freed by a
    # delivered one would otherwise always find room.
    drainer._send_more = lambda: None
    runner = threading.Thread(target=monitor.run)
    runner.start()
    try:
        wait_until(lambda: monitor.sink.stats().store_failed >= 3, 30, "events the full outbox could not store")
        windows = monitor.counters.windows
        wait_until(lambda: monitor.counters.windows > windows + 20, 20, "scoring to go on")
        wait_until(lambda: any((h.get("outbox_full") or 0) > 0 for h in seen("/health")), 15,
                   "health to report outbox_full")
        stats = monitor.sink.stats()
        assert stats.unstored_sent == stats.store_failed  # connected all along: each went out directly
        del drainer._send_more  # the stored ones go out now
        wait_until(lambda: len({e["event_id"] for e in seen("/event/anomaly")}) >= monitor.counters.events, 20,
                   "every event, stored or not")
    finally:
        monitor.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    events = [e["event_id"] for e in seen("/event/anomaly")]
    report("monitor on a full outbox", monitor.counters.events, events)
    assert len(set(events)) == monitor.counters.events


def test_factoryedge_run_starts_and_scores_on_a_full_disk(limit, tmp_path, broker, subscribe, sim_bundle):
    import sys

    import yaml

    from tests.support.monitoring import alternating_recording, write_profile

    folder, options, filler = limit
    sub = subscribe(["factoryedge/v1/+/+/+/event/anomaly"])
    # a process that stopped with events still in its outbox ...
    broker.stop()
    first = MqttSink.from_uri(sink_uri(broker, folder, **options))
    producer = Producer(first)
    producer.publish(5)
    left = producer.ids("stored")
    first.close(timeout=1)
    # ... then the disk filled up, and the device restarts (systemd would, again and again)
    filler.fill()
    broker.restart()
    path = write_profile(tmp_path, sim_bundle, f"replay://{alternating_recording(tmp_path, cycles=4)}?speed=4"
                         "&block=512", broker, clear_windows=5)
    profile = yaml.safe_load(path.read_text())
    profile["mqtt"]["outbox"] = str(folder / "outbox.sqlite")
    profile["mqtt"]["options"].pop("keep_delivered", None)
    profile["mqtt"]["options"].update(options)
    path.write_text(yaml.safe_dump(profile))
    log_path = tmp_path / "device.log"
    with open(log_path, "wb") as log_file:
        done = subprocess.run([sys.executable, "-m", "factoryedge", "run", str(path)], stdout=subprocess.DEVNULL,
                              stderr=log_file, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log_text = log_path.read_text(errors="replace")
    assert done.returncode == 0, log_text[-3000:]
    scored = {line.split("event_id=")[1].split()[0] for line in log_text.splitlines()
              if "anomaly " in line and "event_id=" in line and "not stored" not in line}
    assert scored, "the device scored and raised events"
    assert ("opened read-only" in log_text) == (not options)  # tmpfs: no room even for the -shm file
    lost = {line.split("event_id=")[1].split()[0] for line in log_text.splitlines() if "NOT sent either" in line}
    sub.wait_for(lambda m: set(received_ids(sub)) >= (left | scored) - lost, 20,
                 "what the last process left behind and every event this one could store or send")
    received = received_ids(sub)
    report(f"factoryedge run on a full disk ({'tmpfs' if not options else 'max_bytes'})",
           len(left) + len(scored), received)
