"""The embedded registry: one SQLite file, safe for many processes on one machine.

Writers serialize on SQLite's write lock (``BEGIN IMMEDIATE``), so the "read latest, insert
next index" step of logging can never interleave with another logger. WAL mode lets a mounted
daemon keep reading while somebody logs.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InvalidInput
from .sql import SCHEMA_VERSION, SQLRegistry, schema_ddl


class SQLiteRegistry(SQLRegistry):
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 120.0):
        self.path = Path(path).expanduser()
        self.url = f"sqlite://{self.path}"
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create the registry directory {self.path.parent}: {exc.strerror}") from exc
        # executescript commits on its own, so the whole schema set-up is one script.
        ddl = schema_ddl(id_type="INTEGER PRIMARY KEY", int_type="INTEGER", real_type="REAL")
        self._db.executescript(
            f"BEGIN IMMEDIATE; {ddl} INSERT INTO schema_version SELECT {SCHEMA_VERSION}"
            " WHERE NOT EXISTS (SELECT 1 FROM schema_version); COMMIT;"
        )

    # -- connections ----------------------------------------------------------------------------
    @property
    def _db(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections must not be shared across threads)."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.Error as exc:
                raise InvalidInput(f"cannot open registry {self.url}: {exc}") from exc
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the first statement."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
