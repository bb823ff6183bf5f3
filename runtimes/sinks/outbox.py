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
plant wants. The hard limit is the disk, or ``max_bytes`` (a bounded outbox): when it is
full, ``put`` raises ``OutboxFullError`` and the caller learns the event was not stored;
storing resumes by itself once space returns. A delivered row is deleted when its mark is
committed (``keep_delivered=0``, the default), or pruned later keeping the newest
``keep_delivered`` for diagnosis.

A full disk must not keep the device from starting: opening writes nothing that is already
right (no ``PRAGMA user_version`` write), and where the file cannot even be opened for
writing it is opened read-only, so its pending rows are still sent; writing is tried again
every few seconds. With nothing pending the file stays small: the WAL is checkpointed
every 100 pages and cut back to 256 KiB (``outbox_file``), and ``compact``
(called by the writer when the outbox has been empty for a moment) hands free pages back
to the file system and truncates the WAL.

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

from .outbox_file import SCHEMA_VERSION, is_full, open_read_only, open_writable

log = logging.getLogger(__name__)

_PRUNE_EVERY = 1024  # delivered marks between automatic prunes: pruning is a table scan
_OVER_LIMIT_LOG_INTERVAL_S = 60.0
_REOPEN_INTERVAL_S = 5.0  # how often a read-only outbox tries to become writable again
MIN_MAX_BYTES = 64 * 1024
__all__ = ["MIN_MAX_BYTES", "SCHEMA_VERSION", "Message", "Outbox", "OutboxFullError"]


class OutboxFullError(SinkError):
    """The outbox cannot store a message now: the disk (or ``max_bytes``) is full, or it is read-only."""


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

    def __init__(self, path: str | Path, max_pending: int | None = 100_000, keep_delivered: int = 0,
                 max_bytes: int | None = None):
        if max_pending is not None and max_pending < 1:
            raise SinkError(f"max_pending={max_pending!r} must be a positive number of messages or None")
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < MIN_MAX_BYTES):
            raise SinkError(f"max_bytes={max_bytes!r} must be a whole number of bytes >= {MIN_MAX_BYTES} or None")
        self.path = Path(path)
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.keep_delivered = max(0, int(keep_delivered))
        self.over_limit = 0
        self.read_only = False  # opened read-only because the disk was full; see _reopen_writable
        self._last_over_log = 0.0
        self._last_reopen = 0.0
        self._marks_since_prune = 0
        self._dirty = False  # written since the last compact
        self._lock = threading.Lock()
        self._db = self._open()
        # undelivered rows, kept as a running count for the max_pending alarm: counting the
        # table on every put made a burst quadratic
        self._pending = self._depth_locked()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SinkError(f"cannot open the outbox {str(self.path)!r}: {e}; give a writable file path "
                            "on persistent storage (e.g. under /var/lib/factoryedge)") from e
        try:
            return open_writable(self.path, self.max_bytes)
        except sqlite3.Error as e:
            if not (self.path.exists() and is_full(e)):
                raise self._unusable(e) from e
            why = e
        try:
            db = open_read_only(self.path, self.max_bytes)
        except sqlite3.Error as e:
            raise self._unusable(e) from e
        if db is None:
            raise SinkError(f"cannot open the outbox {str(self.path)!r} even read-only: {why}; free space on its "
                            "file system (keep the file: its undelivered events are sent once it opens)") from why
        self.read_only = True
        self._last_reopen = time.monotonic()
        log.warning("outbox %s opened read-only: %s; its pending messages are sent, new ones cannot be stored "
                    "until space returns (tried again every %.0f s)", self.path, "the disk is full", _REOPEN_INTERVAL_S)
        return db

    def _unusable(self, e: sqlite3.Error) -> SinkError:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_CANTOPEN:
            return SinkError(f"cannot open the outbox {str(self.path)!r}: {e}; give a writable file path "
                             "on persistent storage (e.g. under /var/lib/factoryedge)")
        return SinkError(f"the outbox {str(self.path)!r} is unusable ({e}); if it is corrupt, move it aside "
                         "(undelivered events in it are then lost) and restart")

    def _reopen_writable(self) -> None:
        """While read-only: try to open for writing again, at most every ``_REOPEN_INTERVAL_S``."""
        now = time.monotonic()
        if now - self._last_reopen < _REOPEN_INTERVAL_S:
            raise OutboxFullError(f"the outbox {str(self.path)!r} is read-only (its disk was full when it "
                                  f"opened); writing is tried again every {_REOPEN_INTERVAL_S:g} s")
        self._last_reopen = now
        try:
            db = open_writable(self.path, self.max_bytes)
        except sqlite3.Error as e:
            raise OutboxFullError(f"the outbox {str(self.path)!r} is still read-only: {e}") from e
        self._conn().close()
        self._db, self.read_only = db, False
        log.warning("outbox %s is writable again; new messages are stored", self.path)

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Store a message durably; returns its row id once committed to disk."""
        return self.write([(topic, payload, qos, retain)])[0]

    def write(self, puts: Sequence[tuple[str, bytes | str, int, bool]] = (), delivered: Iterable[int] = (),
              _delete: bool = False) -> list[int]:
        """Store ``puts`` (topic, payload, qos, retain) and mark ``delivered`` rows, in one transaction.

        Group commit: one fsync covers every message in ``puts``, and the row ids come back only
        once it is done, in the order given. A call with marks only commits without the fsync
        (``synchronous=NORMAL``, see the module doc). Marks are idempotent. A marked row is
        deleted (kept as delivered where ``keep_delivered`` asks for it and there is room).
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
            if self.read_only:
                self._reopen_writable()
            db = self._conn()
            now = time.time()
            # Where no delivered rows are kept, a mark deletes the row; where they are, and
            # the outbox is full, an update may need a page it cannot have: delete then.
            keep = bool(self.keep_delivered) and not _delete
            try:
                if not rows:  # a lost mark only causes a re-send, so skip the fsync here (see module doc)
                    db.execute("PRAGMA synchronous=NORMAL")
                db.execute("BEGIN")
                row_ids = [db.execute("INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                                      (*r, now)).lastrowid for r in rows]
                marked = 0
                mark_sql = ("UPDATE outbox SET delivered = ? WHERE id = ? AND delivered IS NULL" if keep
                            else "DELETE FROM outbox WHERE id = ? AND delivered IS NULL")
                for i in ids:
                    marked += db.execute(mark_sql, (now, i) if keep else (i,)).rowcount
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback()
                # Full, with delivered rows kept for diagnosis: they are the first to go, then once more.
                if not (keep and is_full(e) and (not rows or self._drop_delivered_locked())):
                    what = "store a message in" if rows else "mark messages delivered in"
                    error = OutboxFullError if is_full(e) else SinkError
                    raise error(f"cannot {what} the outbox {str(self.path)!r}: {e}") from e
                row_ids = None
            finally:
                if not rows:
                    self._restore_full_sync()
            if row_ids is not None:
                self._dirty = True
                self._pending += len(row_ids) - marked
                depth = self._pending
                self._marks_since_prune += len(ids)
                if self._marks_since_prune >= _PRUNE_EVERY and self.keep_delivered:
                    self._prune_locked()
        if row_ids is None:
            return self.write(puts, ids, _delete=True)
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

    def _drop_delivered_locked(self) -> bool:
        """Delete every delivered row (kept for diagnosis) to make room; True if any went."""
        try:
            return self._conn().execute("DELETE FROM outbox WHERE delivered IS NOT NULL").rowcount > 0
        except sqlite3.Error:
            return False

    def compact_due(self) -> bool:
        """Written since the last ``compact`` and nothing pending."""
        return self._dirty and self._pending == 0 and not self.read_only

    def compact(self) -> bool:
        """With nothing pending: drop delivered rows, hand free pages back, truncate the WAL.

        Returns False (and changes nothing) while messages are pending, or when it fails
        (logged at DEBUG: a full disk can refuse the checkpoint; the next call tries again).
        """
        with self._lock:
            if not self.compact_due():
                return False
            db = self._conn()
            try:
                if self.keep_delivered:
                    self._prune_locked()
                else:
                    db.execute("DELETE FROM outbox WHERE delivered IS NOT NULL")
                # executescript: execute() steps this pragma once, which frees a single page.
                # A no-op on files made before auto_vacuum was set.
                db.executescript("PRAGMA incremental_vacuum;")
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except (sqlite3.Error, SinkError) as e:
                log.debug("outbox %s: compacting failed: %s", self.path, e)
                return False
            self._dirty = bool(busy)
            return not busy

    def size_on_disk(self) -> int:
        """Bytes of the outbox file and its -wal and -shm files together."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
                   if p.exists())

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
