"""The embedded registry: one SQLite file, safe for many processes on one machine.

Writers serialize on SQLite's write lock (``BEGIN IMMEDIATE``), so the "read latest, insert
next index" step of logging can never interleave with another logger. WAL mode lets a mounted
daemon keep reading while somebody logs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ..errors import InvalidInput
from .base import NoRegistry
from .sql import SCHEMA_VERSION, SQLRegistry, check_schema, schema_ddl, upgrade
from .url import sqlite_url


class SQLiteRegistry(SQLRegistry):
    """``create``: make the file when it does not exist yet (only callers that write ask for it).

    An existing file is used only if it is a refmount registry: anything else (empty, another
    application's database, not SQLite at all) is refused without writing a byte to it.
    """

    def __init__(self, path: str | Path, *, create: bool = False, busy_timeout_s: float = 120.0):
        self.path = Path(path).expanduser().absolute()
        self.url = sqlite_url(self.path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        if not self.path.exists():
            if not create:
                raise NoRegistry(str(self.path))
            self._create()
        if self._check_schema() < SCHEMA_VERSION:
            self._upgrade()

    def _create(self) -> None:
        """Write the schema into a private file, then link it into place: a concurrent opener sees
        no file or a complete registry, never an empty file it would have to refuse."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInput(f"cannot create the registry directory {self.path.parent}: {exc.strerror}") from exc
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self._write_schema(tmp)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made it first: use theirs (checked like any existing file)
            except OSError:  # a filesystem without hard links: create in place, without that guarantee
                self._write_schema(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise InvalidInput(f"cannot create registry {self.url}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _write_schema(self, path: Path) -> None:
        db = sqlite3.connect(path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            # WAL from birth: switching later needs an exclusive lock that racing first users would fight over.
            db.execute("PRAGMA journal_mode=WAL")
            # executescript commits on its own, so the whole schema set-up is one script.
            ddl = schema_ddl(id_type="INTEGER PRIMARY KEY", int_type="INTEGER", real_type="REAL")
            db.executescript(
                f"BEGIN IMMEDIATE; {ddl} INSERT INTO schema_version SELECT {SCHEMA_VERSION}"
                " WHERE NOT EXISTS (SELECT 1 FROM schema_version); COMMIT;"
            )
        finally:
            db.close()

    def _upgrade(self) -> None:
        try:
            with self._write() as db:
                upgrade(db, str(self.path))
        except sqlite3.Error as exc:
            raise InvalidInput(f"registry {self.path} has an older schema and cannot be upgraded: {exc}") from exc

    def _check_schema(self) -> int:
        """Refuse anything but a refmount registry, through a read-only connection (it writes nothing);
        returns its schema version."""
        if self.path.is_dir():
            raise InvalidInput(f"registry path {self.path} is a directory, not a file")
        try:
            db = sqlite3.connect(f"file:{quote(str(self.path))}?mode=ro", uri=True, timeout=self._busy_timeout_s)
        except sqlite3.Error as exc:
            raise InvalidInput(f"cannot open registry {self.url}: {exc}") from exc
        try:
            tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return check_schema(db, tables, str(self.path))
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise InvalidInput(f"{self.path} is not a refmount registry ({exc}); left untouched") from None
            raise InvalidInput(f"cannot open registry {self.url}: {exc}") from exc
        finally:
            db.close()

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
