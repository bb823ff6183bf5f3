"""A persistent store-and-forward queue for outgoing messages, in one SQLite file.

``put`` returns only after the row is committed with ``synchronous=FULL`` in WAL mode, so a
message the caller was told about survives a crash or a power cut. ``write`` commits many
messages (and delivery marks) in one such transaction: one fsync for all, which is what
lets a burst of events go faster than one fsync each. Marking rows delivered alone is
committed with ``synchronous=NORMAL``: losing such a mark to a power cut only means the
message is sent again, which at-least-once delivery allows (consumers de-duplicate).

Size policy: the outbox never drops a message. ``max_pending`` is an alarm level, not a
cap: above it each ``put`` still succeeds, counts in ``over_limit`` and logs an error (at
most once a minute), because an event that cannot be delivered for days is still one the
plant wants. The hard limit is the disk: when it is full, ``put`` raises ``SinkError`` and
the caller learns the event was not stored. Delivered rows are pruned automatically,
keeping the newest ``keep_delivered`` for diagnosis.

All methods are thread-safe: one connection, guarded by a lock (SQLite serialises writers
anyway, and the MQTT network thread and the pipeline both call in).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from factoryedge.errors import SinkError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_PRUNE_EVERY = 1024  # delivered marks between automatic prunes: pruning is a table scan
_OVER_LIMIT_LOG_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    created REAL NOT NULL,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered IS NULL;
"""


@dataclass(frozen=True)
class Message:
    """One stored message; ``id`` increases with insertion order and is never reused."""

    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: float


class Outbox:
    """The on-disk queue at ``path`` (created with its parent folders if missing)."""

    def __init__(self, path: str | Path, max_pending: int | None = 100_000, keep_delivered: int = 1000):
        if max_pending is not None and max_pending < 1:
            raise SinkError(f"max_pending={max_pending!r} must be a positive number of messages or None")
        self.path = Path(path)
        self.max_pending = max_pending
        self.keep_delivered = max(0, int(keep_delivered))
        self.over_limit = 0
        self._last_over_log = 0.0
        self._marks_since_prune = 0
        self._lock = threading.Lock()
        self._db = self._open()
        # undelivered rows, kept as a running count for the max_pending alarm: counting the
        # table on every put made a burst quadratic
        self._pending = self._depth_locked()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so each put is one transaction
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        except (OSError, sqlite3.Error) as e:
            raise SinkError(f"cannot open the outbox {str(self.path)!r}: {e}; give a writable file path "
                            "on persistent storage (e.g. under /var/lib/factoryedge)") from e
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is not supported here")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"outbox schema version {version}, this software reads {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("SELECT count(*) FROM outbox").fetchone()
        except sqlite3.Error as e:
            db.close()
            raise SinkError(f"the outbox {str(self.path)!r} is unusable ({e}); if it is corrupt, move it aside "
                            "(undelivered events in it are then lost) and restart") from e
        return db

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store a message durably; returns its row id once committed to disk."""
        return self.write([(topic, payload, qos, retain)])[0]

    def write(self, puts: Sequence[tuple[str, bytes | str, int, bool]] = (), delivered: Iterable[int] = ()) -> list[int]:
        """Store ``puts`` (topic, payload, qos, retain) and mark ``delivered`` rows, in one transaction.

        Group commit: one fsync covers every message in ``puts``, and the row ids come back only
        once it is done, in the order given. A call with marks only commits without the fsync
        (``synchronous=NORMAL``, see the module doc). Marks are idempotent.
        """
        rows = []
        for topic, payload, qos, retain in puts:
            if qos not in (0, 1, 2):
                raise SinkError(f"qos={qos!r} is not an MQTT QoS; use 0, 1 or 2")
            rows.append((topic, payload.encode() if isinstance(payload, str) else bytes(payload), qos, int(retain)))
        ids = list(delivered)
        if not rows and not ids:
            return []
        with self._lock:
            db = self._conn()
            now = time.time()
            try:
                if not rows:  # a lost mark only causes a re-send, so skip the fsync here (see module doc)
                    db.execute("PRAGMA synchronous=NORMAL")
                db.execute("BEGIN")
                row_ids = [db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                                      (*r, now)).lastrowid for r in rows]
                marked = 0
                for i in ids:
                    marked += db.execute("UPDATE outbox SET delivered = ? WHERE id = ? AND delivered IS NULL",
                                         (now, i)).rowcount
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                what = "store a message in" if rows else "mark messages delivered in"
                raise SinkError(f"cannot {what} the outbox {str(self.path)!r}: {e}") from e
            finally:
                if not rows:
                    self._restore_full_sync()
            self._pending += len(row_ids) - marked
            depth = self._pending
            self._marks_since_prune += len(ids)
            if self._marks_since_prune >= _PRUNE_EVERY:
                self._prune_locked()
        if rows and self.max_pending is not None and depth > self.max_pending:
            self._note_over_limit(depth)
        return row_ids

    def _note_over_limit(self, depth: int) -> None:
        self.over_limit += 1
        now = time.monotonic()
        if now - self._last_over_log >= _OVER_LIMIT_LOG_INTERVAL_S:
            self._last_over_log = now
            log.error("outbox over its limit path=%s depth=%d max_pending=%d over_limit_puts=%d: messages "
                      "are kept, but nothing has been delivered for a long time; check the broker link",
                      self.path, depth, self.max_pending, self.over_limit)

    def pending(self, limit: int = 100, after: int = 0) -> list[Message]:
        """Undelivered messages with ``id > after``, oldest first, at most ``limit``."""
        with self._lock:
            rows = self._query("SELECT id, topic, payload, qos, retain, created FROM outbox "
                               "WHERE delivered IS NULL AND id > ? ORDER BY id LIMIT ?", (after, int(limit)))
        return [Message(r[0], r[1], bytes(r[2]), r[3], bool(r[4]), r[5]) for r in rows]

    def mark_delivered(self, ids: Iterable[int]) -> None:
        """Mark rows delivered (idempotent); prunes old delivered rows now and then."""
        self.write(delivered=ids)

    def prune(self) -> int:
        """Delete delivered rows except the newest ``keep_delivered``; returns how many went."""
        with self._lock:
            return self._prune_locked()

    def _prune_locked(self) -> int:
        self._marks_since_prune = 0
        db = self._conn()
        try:
            # below the keep_delivered-th newest delivered id (a walk down the primary key),
            # rather than NOT IN over a list of kept ids: this runs during bursts
            cur = db.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL AND id < "
                "(SELECT id FROM outbox WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.keep_delivered - 1,)) if self.keep_delivered else db.execute(
                "DELETE FROM outbox WHERE delivered IS NOT NULL")
        except sqlite3.Error as e:
            raise SinkError(f"cannot prune the outbox {str(self.path)!r}: {e}") from e
        self._pending = self._depth_locked()  # re-anchor the running count on the table now and then
        return cur.rowcount

    def oldest_age(self, now: float | None = None) -> float | None:
        """Seconds since the oldest undelivered message was stored, or None when nothing waits."""
        with self._lock:
            oldest = self._query("SELECT min(created) FROM outbox WHERE delivered IS NULL", ())[0][0]
        if oldest is None:
            return None
        return max(0.0, (time.time() if now is None else now) - float(oldest))

    def depth(self) -> int:
        """How many messages wait to be delivered."""
        with self._lock:
            return self._depth_locked()

    def _depth_locked(self) -> int:
        return self._query("SELECT count(*) FROM outbox WHERE delivered IS NULL", ())[0][0]

    def close(self) -> None:
        """Close the file; further calls raise SinkError."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise SinkError(f"the outbox {str(self.path)!r} is closed")
        return self._db

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        db = self._conn()
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise SinkError(f"cannot read the outbox {str(self.path)!r}: {e}") from e

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction was open: nothing to undo

    def _restore_full_sync(self) -> None:
        try:
            self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as e:
            log.error("outbox %s: cannot restore synchronous=FULL: %s", self.path, e)
