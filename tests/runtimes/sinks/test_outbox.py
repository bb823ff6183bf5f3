"""The SQLite outbox: durable puts, ordering, delivery marks, pruning, limits, threads, bad paths."""
from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from factoryedge.errors import SinkError
from factoryedge.runtimes.sinks.outbox import Outbox, OutboxFullError


def test_put_survives_reopening_in_a_new_object(tmp_path):
    path = tmp_path / "state" / "outbox.sqlite"  # parent folders are created
    with Outbox(path) as box:
        ids = [box.put("a/b", f"m{i}".encode(), qos=1, retain=i == 2) for i in range(3)]
    assert ids == sorted(ids)
    with Outbox(path) as again:
        pending = again.pending(10)
    assert [m.id for m in pending] == ids
    assert [m.payload for m in pending] == [b"m0", b"m1", b"m2"]
    assert [m.retain for m in pending] == [False, False, True]
    assert {m.topic for m in pending} == {"a/b"} and {m.qos for m in pending} == {1}


def test_put_is_durable_when_the_process_dies_without_closing(tmp_path):
    """``put`` returning means committed: a process killed right after loses nothing."""
    path = tmp_path / "outbox.sqlite"
    code = textwrap.dedent(f"""
        import os
        from factoryedge.runtimes.sinks.outbox import Outbox, OutboxFullError
        box = Outbox({str(path)!r})
        for i in range(50):
            box.put("t", str(i).encode())
        os._exit(0)  # no close, no atexit: like a crash right after the last put returned
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with Outbox(path) as box:
        assert [m.payload for m in box.pending(100)] == [str(i).encode() for i in range(50)]


def test_wal_mode_and_full_sync(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as box:
        box.put("t", b"x")
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        box.mark_delivered([1])
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # restored after a mark
    with sqlite3.connect(tmp_path / "o.sqlite") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_pending_is_oldest_first_with_limit_and_after(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as box:
        ids = [box.put("t", bytes([i])) for i in range(10)]
        assert [m.id for m in box.pending(3)] == ids[:3]
        assert [m.id for m in box.pending(3, after=ids[4])] == ids[5:8]
        assert box.pending(5, after=ids[-1]) == []


def test_mark_delivered_is_idempotent_and_persistent(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        ids = [box.put("t", b"x") for _ in range(5)]
        box.mark_delivered(ids[:3])
        box.mark_delivered(ids[:3])
        box.mark_delivered([])
        assert box.depth() == 2
    with Outbox(path) as box:
        assert [m.id for m in box.pending(10)] == ids[3:]


def test_prune_keeps_only_the_newest_delivered_rows(tmp_path):
    with Outbox(tmp_path / "o.sqlite", keep_delivered=2) as box:
        ids = [box.put("t", b"x") for _ in range(6)]
        box.mark_delivered(ids[:4])
        assert box.prune() == 2
        kept = box._db.execute("SELECT id FROM outbox ORDER BY id").fetchall()
        assert [r[0] for r in kept] == ids[2:]
        assert box.depth() == 2
        # ids are never reused, even after pruning: the drainer relies on increasing ids
        assert box.put("t", b"y") > ids[-1]


def test_over_the_limit_nothing_is_dropped_but_it_is_counted_and_logged(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="factoryedge.runtimes.sinks.outbox"):
        with Outbox(tmp_path / "o.sqlite", max_pending=3) as box:
            for i in range(6):
                box.put("t", bytes([i]))
            assert box.depth() == 6
            assert box.over_limit == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # rate-limited, not one line per put
    assert "max_pending=3" in errors[0].getMessage()


def test_concurrent_puts_and_marks(tmp_path):
    """Producers put while a consumer marks what it sees as delivered: no loss, no duplicate ids."""
    box = Outbox(tmp_path / "o.sqlite")
    ids: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    def producer(k):
        for i in range(100):
            row = box.put(f"t/{k}", f"{k}-{i}".encode())
            with lock:
                ids.append(row)

    def consumer():
        while not done.is_set() or box.depth():
            box.mark_delivered(m.id for m in box.pending(50))

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    marker = threading.Thread(target=consumer)
    marker.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    marker.join(30)
    assert not marker.is_alive()
    assert len(ids) == len(set(ids)) == 400
    assert box.depth() == 0
    box.close()


def test_corrupt_file_is_a_sink_error_naming_the_path(tmp_path):
    bad = tmp_path / "outbox.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SinkError, match="outbox.sqlite") as err:
        Outbox(bad)
    assert "move it aside" in str(err.value)


def test_unwritable_path_is_a_sink_error_naming_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(SinkError, match=str(blocker / "outbox.sqlite")):
        Outbox(blocker / "outbox.sqlite")


def test_closed_outbox_and_bad_qos_are_sink_errors(tmp_path):
    box = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(SinkError, match="qos=3"):
        box.put("t", b"x", qos=3)
    box.close()
    for call in (lambda: box.put("t", b"x"), box.depth, lambda: box.mark_delivered([1])):
        with pytest.raises(SinkError, match="closed"):
            call()


def test_write_stores_many_and_marks_in_one_transaction(tmp_path):
    """Group commit: the ids come back in order, the marks land with them, the count follows."""
    with Outbox(tmp_path / "o.sqlite", max_pending=3) as box:
        first = box.put("t", b"0")
        ids = box.write([("t", b"1", 1, False), ("u", "2", 1, True), ("t", b"3", 2, False)], delivered=[first])
        assert ids == sorted(ids) and ids[0] > first
        assert [(m.id, m.payload, m.retain, m.qos) for m in box.pending(10)] == [
            (ids[0], b"1", False, 1), (ids[1], b"2", True, 1), (ids[2], b"3", False, 2)]
        assert box.depth() == 3 and box.over_limit == 0
        box.write([("t", b"4", 1, False)])
        assert box.over_limit == 1  # the running count saw the fourth pending message
        assert box.write() == []
        with pytest.raises(SinkError, match="qos=5"):
            box.write([("t", b"5", 1, False), ("t", b"6", 5, False)])
        assert box.depth() == 4  # nothing of a refused write was stored


@pytest.mark.parametrize("keep", [0, 1, 3, 50])
def test_prune_keeps_the_newest_delivered_whatever_the_mix(tmp_path, keep):
    with Outbox(tmp_path / "o.sqlite", keep_delivered=keep) as box:
        ids = box.write([("t", bytes([i]), 1, False) for i in range(12)])
        delivered = ids[::2] + [ids[7]]
        box.mark_delivered(delivered)
        box.prune()
        left = [r[0] for r in box._db.execute("SELECT id FROM outbox WHERE delivered IS NOT NULL ORDER BY id")]
        assert left == sorted(delivered)[len(delivered) - min(keep, len(delivered)):]
        assert [m.id for m in box.pending(20)] == [i for i in ids if i not in delivered]
        assert box.depth() == 12 - len(delivered)


@pytest.mark.parametrize("keep", [0, 5])
def test_a_full_max_bytes_outbox_refuses_new_messages_and_its_marks_make_room(tmp_path, keep):
    with Outbox(tmp_path / "o.sqlite", max_bytes=64 * 1024, keep_delivered=keep) as box:
        ids = []
        with pytest.raises(OutboxFullError, match="full"):
            for _ in range(10_000):
                ids.append(box.put("t", b"x" * 3000))
        assert 5 < len(ids) < 30 and box.depth() == len(ids)
        # marks commit on a full outbox (kept-as-delivered ones are deleted when there is no room)
        box.mark_delivered(ids)
        assert box.depth() == 0
        assert box.put("t", b"x" * 3000) > ids[-1]


def test_max_bytes_is_checked(tmp_path):
    with pytest.raises(SinkError, match=r"max_bytes=1000 must be a whole number of bytes >= 65536"):
        Outbox(tmp_path / "o.sqlite", max_bytes=1000)


def test_reopening_writes_nothing_to_the_file(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        box.put("t", b"x")
    before = path.read_bytes()
    with Outbox(path) as box:  # on a full disk any write here would refuse the start
        assert box.depth() == 1 and not box.read_only
    assert path.read_bytes() == before


def test_compact_deletes_delivered_rows_and_gives_the_space_back(tmp_path):
    with Outbox(tmp_path / "o.sqlite") as box:
        ids = box.write([("t", b"x" * 1000, 1, False) for _ in range(2000)])
        assert box.size_on_disk() > 2_000_000
        assert not box.compact()  # messages pending: nothing to do
        box.mark_delivered(ids)
        assert box.compact()
        assert box.size_on_disk() <= 64 * 1024
        assert box.put("t", b"y") > ids[-1]  # ids are never reused
