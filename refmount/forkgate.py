"""Keeping fork() out of SQLite writes.

SQLite keeps its view of the locks on a database file in process memory, shared by every connection of the
process. A child forked while a parent's thread holds the write lock of the block cache inherits that view:
its own new connections then see the lock as taken by a connection of their own process, never released,
and every write fails with "database is locked" (a PyTorch DataLoader forking workers while the
parent's reader stores blocks). :data:`SQLITE` is a gate each SQLite call of the cache passes; a fork waits
until no call is inside, and no call starts until the fork is done.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType


class ForkGate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inside = 0
        os.register_at_fork(before=self._hold, after_in_parent=self._lock.release,
                            after_in_child=self._lock.release)  # fmt: skip

    def __enter__(self) -> None:
        with self._lock:  # held by a fork in progress: wait for it
            self._inside += 1

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with self._lock:
            self._inside -= 1
            if not self._inside:
                self._idle.notify_all()

    def _hold(self) -> None:
        """Before a fork: wait until no call is inside, and keep the lock (so none enters) until it is done."""
        self._lock.acquire()
        while self._inside:
            self._idle.wait()


SQLITE = ForkGate()
