"""The one thread that writes the MQTT sink's outbox: group commit of events and delivery marks.

Callers hand a message over (``submit``) and get a ``Receipt``; the writer takes everything
queued at that moment (messages from any thread, and the marks the drainer sends for
PUBACKs) and commits it in one SQLite transaction, so a burst of N events costs one fsync,
not N. Messages are committed in the order they were submitted, so row ids, and with them
delivery order, follow submission order. A receipt is done once its row is committed
(``result()`` gives the row id) or the transaction failed. A message that cannot be stored
(a full disk) goes to ``on_unstored``, which may still send it directly (``unstored``):
then ``result()`` gives None, else it raises the ``SinkError``. Only a committed message is
*accepted*: a crash before that loses it, as a crash during a synchronous ``put`` would.

Delivery marks that cannot be committed (a full disk) are kept and tried again every
``_MARK_RETRY_S``: dropping them would leave delivered rows in a full outbox for good. When
the outbox has been empty for ``_COMPACT_IDLE_S`` the writer compacts it (``Outbox.compact``).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from factoryedge.errors import SinkError

from .outbox import Message, Outbox

log = logging.getLogger("factoryedge.runtimes.sinks.mqtt")

_MAX_BATCH = 1000  # messages per transaction: bounds the time one commit holds the outbox
# Delivery marks alone wait for company: a transaction per PUBACK cost ~30 us of the writer's
# time each (a third of a message's budget at broker speed), one per 256 marks ~4 us. A mark
# not yet committed when the process dies only means that message is sent once more.
_MARK_BATCH = 256
_MARK_DELAY_S = 0.05
_MARK_RETRY_S = 1.0  # after marks failed to commit (a full disk): wait before trying them again
_MAX_HELD_MARKS = 1_000_000  # beyond, the oldest failed marks are dropped: those rows are sent again
_COMPACT_IDLE_S = 0.5  # compact only once a burst is over, not between two of its events


class Receipt:
    """A message handed to the writer; done once committed (``result()`` = row id) or failed."""

    __slots__ = ("_done", "_row", "_error")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._row: int | None = None
        self._error: SinkError | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> int | None:
        """The row id once committed, None if not stored but sent directly (at most once).

        SinkError if it was neither stored nor sent, or ``timeout`` passed first.
        """
        if not self._done.wait(timeout):
            raise SinkError(f"the outbox did not commit the message within {timeout} s; it may still be stored")
        if self._error is not None:
            raise self._error
        return self._row

    def _set(self, row: int | None, error: SinkError | None = None) -> None:
        self._row, self._error = row, error
        self._done.set()


class OutboxWriter:
    """Owns every write to ``outbox``; calls ``on_commit(messages, marked_ids)`` after each transaction.

    ``on_commit`` runs on the writer thread and must only hand work on (a queue).
    """

    def __init__(self, outbox: Outbox, on_commit: Callable[[list[Message], list[int]], None],
                 on_unstored: Callable[[str, bytes, int, bool, Exception], bool] | None = None):
        self.outbox = outbox
        self._on_commit = on_commit
        self._on_unstored = on_unstored
        self._marks_retry_at = 0.0  # monotonic time before which failed marks are not tried again
        self._cond = threading.Condition()
        self._puts: deque[tuple[tuple, Receipt]] = deque()
        self._marks: list[int] = []
        self._marks_since = 0.0  # monotonic time of the oldest mark not yet committed
        self._busy = False
        self._stop = False
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="factoryedge-mqtt-outbox", daemon=True)
        self._thread.start()

    def submit(self, topic: str, payload: bytes, qos: int, retain: bool) -> Receipt:
        receipt = Receipt()
        with self._cond:
            if self._stop:
                raise SinkError(f"the outbox writer for {str(self.outbox.path)!r} is closed")
            self._puts.append(((topic, payload, qos, retain), receipt))
            self._cond.notify_all()
        return receipt

    def mark(self, ids: list[int]) -> None:
        """Queue delivery marks (PUBACKs); committed with the next messages, or in batches of
        ``_MARK_BATCH``, or ``_MARK_DELAY_S`` after the oldest, whichever comes first."""
        with self._cond:
            first = not self._marks
            if first:
                self._marks_since = time.monotonic()
            self._marks.extend(ids)
            if first or len(self._marks) >= _MARK_BATCH:
                self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing queued and nothing being committed."""
        with self._cond:
            return not (self._puts or self._marks or self._busy)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not (self._puts or self._marks or self._busy), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("mqtt outbox writer did not finish within %.0f s; queued events may not be stored", timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._wait_for_work()
                if self._stop and not self._puts and (not self._marks or time.monotonic() < self._marks_retry_at):
                    return  # stopping, and everything handed over is committed (or cannot be)
                if not (self._puts or self._marks):
                    self._busy = True  # idle for a while with an empty outbox: compact it
                    self._cond.release()
                    try:
                        self.outbox.compact()
                    finally:
                        self._cond.acquire()
                        self._busy = False
                    continue
                batch = [self._puts.popleft() for _ in range(min(len(self._puts), _MAX_BATCH))]
                marks, self._marks = self._marks, []
                self._busy = True
            try:
                self._commit(batch, marks)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _wait_for_work(self) -> None:
        """Until there are messages, marks due (a full batch, or as old as ``_MARK_DELAY_S``, and
        not waiting for a retry), a stop, or ``_COMPACT_IDLE_S`` of idleness with compacting due."""
        while not (self._puts or self._stop):
            now = time.monotonic()
            if not self._marks:
                if not self.outbox.compact_due():
                    self._cond.wait()
                elif not self._cond.wait(_COMPACT_IDLE_S) and not (self._puts or self._marks):
                    return
                continue
            due = self._marks_retry_at if len(self._marks) >= _MARK_BATCH else max(
                self._marks_since + _MARK_DELAY_S, self._marks_retry_at)
            if now >= due:
                return
            self._cond.wait(due - now)

    def _commit(self, batch: list[tuple[tuple, Receipt]], marks: list[int]) -> None:
        try:
            ids = self.outbox.write([item for item, _ in batch], marks)
        except SinkError as e:
            if batch and marks:
                # On a full outbox the marks alone can commit (they delete rows and so make
                # room); bundled with messages that cannot be stored they never would.
                self._commit([], marks)
                self._commit(batch, [])
                return
            if len(batch) > 1:
                # one bad message must not take its neighbours down: store them one by one
                for one in batch:
                    self._commit([one], [])
                return
            if marks:
                self._hold_marks(marks, e)
            self._fail(batch, e)
            return
        except Exception as e:  # noqa: BLE001 - a writer that died would hang every waiting caller
            log.exception("mqtt outbox writer failed")
            self._fail(batch, SinkError(f"the outbox writer failed: {e}"))
            return
        for (_, receipt), row in zip(batch, ids):
            receipt._set(row)
        now = time.time()
        messages = [Message(row, t, p, q, bool(r), now) for ((t, p, q, r), _), row in zip(batch, ids)]
        self._on_commit(messages, marks)

    def _hold_marks(self, marks: list[int], error: SinkError) -> None:
        """Keep marks that could not commit alone (a full disk) and try them again later, not in a tight loop."""
        with self._cond:
            self._marks[:0] = marks
            self._marks_retry_at = time.monotonic() + _MARK_RETRY_S
            log.debug("mqtt outbox could not mark %d message(s) delivered (%s); retrying in %.0f s",
                      len(marks), error, _MARK_RETRY_S)
            if len(self._marks) > _MAX_HELD_MARKS:
                dropped = len(self._marks) - _MAX_HELD_MARKS
                del self._marks[:dropped]
                log.error("mqtt outbox dropped %d delivery marks it could not commit (%s); those messages "
                          "will be sent again", dropped, error)

    def _fail(self, batch: list[tuple[tuple, Receipt]], error: SinkError) -> None:
        if not batch:
            return
        self.failed += len(batch)
        if self._on_unstored is None:
            log.error("mqtt outbox could not store an event topic=%s: %s", batch[0][0][0], error)
        for item, receipt in batch:
            sent = self._on_unstored is not None and self._on_unstored(*item, error)
            receipt._set(None, None if sent else error)
