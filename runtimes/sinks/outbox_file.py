"""Opening the outbox's SQLite file so that a full disk does not stop it.

Nothing already right is written (a full disk refuses any write, even ``PRAGMA
user_version``), and where the file cannot be opened for writing it can be opened read-only.
New files get ``auto_vacuum=INCREMENTAL`` so ``Outbox.compact`` can hand free pages back.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
# SQLite's defaults (checkpoint at 1000 pages, never shrink the WAL) left ~4 MB of WAL on a
# device with nothing pending; a smaller WAL costs a checkpoint per ~400 KB written.
_AUTOCHECKPOINT_PAGES = 100
_WAL_LIMIT_BYTES = 256 * 1024

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


def open_writable(path: Path, max_bytes: int | None) -> sqlite3.Connection:
    """A read-write connection; writes only what is not yet right, so a full disk does not stop it."""
    # isolation_level=None: the outbox issues BEGIN/COMMIT itself so each put is one transaction
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    try:
        if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            if not has_table(db):  # a new file: let compact() give free pages back (set before any table)
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is not supported here")
        configure(db, max_bytes)
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        if not has_table(db):
            db.executescript(_SCHEMA)
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("SELECT count(*) FROM outbox").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def open_read_only(path: Path, max_bytes: int | None) -> sqlite3.Connection | None:
    """A read-only connection to a file that cannot be opened for writing (the disk is full).

    ``mode=ro`` still needs the WAL index (-shm); where even that cannot be created, and the
    WAL holds nothing (the last process checkpointed it), the file alone is complete and
    ``immutable=1`` reads it without any side file. None where neither works.
    """
    wal = Path(f"{path}-wal")
    uris = [f"{path.resolve().as_uri()}?mode=ro"]
    if not wal.exists() or wal.stat().st_size == 0:
        uris.append(f"{path.resolve().as_uri()}?mode=ro&immutable=1")
    for uri in uris:
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=10.0)
        except sqlite3.Error:
            continue
        try:
            configure(db, max_bytes)
            db.execute("SELECT count(*) FROM outbox").fetchone()
            return db
        except sqlite3.Error as e:
            db.close()
            if not is_full(e):
                raise
    return None


def configure(db: sqlite3.Connection, max_bytes: int | None) -> None:
    """Checks the schema version; applies the page budget (per connection in SQLite)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"outbox schema version {version}, this software reads {SCHEMA_VERSION}")
    if max_bytes is not None:
        page = db.execute("PRAGMA page_size").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={max_bytes // page}")


def is_full(e: sqlite3.Error) -> bool:
    """SQLITE_FULL, or an I/O error that a full file system causes (e.g. the -shm file cannot grow)."""
    code = getattr(e, "sqlite_errorcode", 0)
    return code & 0xFF == sqlite3.SQLITE_FULL or code in _NO_SPACE_IOERRS


_NO_SPACE_IOERRS = frozenset(getattr(sqlite3, name, -1) for name in (
    "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_SHMOPEN", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_TRUNCATE"))


def has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").fetchone() is not None
