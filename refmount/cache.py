"""The persistent block cache: checksummed blocks of pinned objects on local disk, via diskcache.

A block is keyed by the object's pinned identity (reference + version id, digest and content MD5) and its index,
so a block can never be served for another version of the object. diskcache keeps its index in
SQLite and large values as plain files, is safe for several processes (two mounts on one node may
share a directory), and evicts the blocks stored longest ago past the size limit. Blocks up to
INLINE_MAX bytes (small files) live inside SQLite, where they are stored and read three times faster
than as files of their own (SQLite's own measurements put the break-even near 100 KiB); larger ones
are files written and read with O_DIRECT. Each block's checksum
(XXH3-64, a dozen times faster than CRC32, which was a tenth of the daemon's CPU on a cold read) is
kept beside it in diskcache's tag column and checked on every load.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import sqlite3
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import diskcache
import xxhash
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from . import compat, directio
from .buffers import Block
from .errors import InvalidInput, NotFound, RefmountError
from .forkgate import SQLITE
from .manifest import CONTENT_MD5, Entry

log = logging.getLogger(__name__)


INLINE_MAX = 128 << 10
PRESENT_BATCH = 500  # keys per query of BlockCache.present (SQLite allows 32,766 parameters; old builds 999)

# What get_inline answers for a key the index did not hold when asked (None: not answered there).
ABSENT = "absent"

# Part of every key: blocks stored in an older format are simply never found (and age out), rather
# than failing their checksum one by one. 2: XXH3-64 checksums (1 was CRC32).
_FORMAT = 2


def block_key(entry: Entry, block_size: int, index: int) -> str:
    """Same object version and block geometry -> same key, whatever artifact or mount asks."""
    identity = f"{_FORMAT}\0{entry.ref}\0{entry.version_id or ''}\0{entry.digest}\0{block_size}\0{index}"
    md5 = entry.extra.get(CONTENT_MD5)
    if md5:  # the pin of a file whose digest is its URL; absent elsewhere, so other keys stay as they were
        identity += f"\0{md5}"
    return hashlib.sha256(identity.encode()).hexdigest()


def _checksum(block: Block) -> str:
    return xxhash.xxh3_64_hexdigest(block.view())  # hex: SQLite integers cannot hold 64 unsigned bits


class _BlockDisk(diskcache.Disk):
    """diskcache's storage for blocks: small ones inline, others in one O_DIRECT write each (see
    :mod:`refmount.directio`; diskcache itself writes a ``bytes`` value line by line, through the page cache).
    """

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, str | None, Any]:
        if not isinstance(value, Block):
            return super().store(value, read, key=key)
        if value.length <= INLINE_MAX:
            return value.length, MODE_RAW, None, sqlite3.Binary(value.view())
        filename, full_path = self.filename(key, value)
        for attempt in range(3):  # another process may remove an emptied subdirectory in between
            os.makedirs(os.path.dirname(full_path), exist_ok=True)
            try:
                directio.create(full_path, value)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return value.length, MODE_BINARY, filename, None


class _TunedCache(diskcache.Cache):
    """diskcache's Cache with two uses of its internals (checked with 5.6, its latest release; with another
    version the plain Cache is used: evictions go uncounted and small blocks are stored one ``set`` each).

    - It counts the blocks its size limit evicts, which diskcache itself does not: every removal of a row by
      the size limit (or an expiry, which blocks never have) passes through the ``cleanup`` callback of
      ``Cache._cull``. A count of this process's writes; another process sharing the directory counts its own.
    - It stores a batch of small blocks with one statement (:meth:`insert_inline`).
    """

    evicted = 0

    def _cull(self, now: float, sql: Any, cleanup: Any, limit: int | None = None) -> None:
        def counted(filename: str | None) -> None:
            self.evicted += 1
            cleanup(filename)

        super()._cull(now, sql, counted, limit)  # type: ignore[misc]

    def insert_inline(self, rows: Sequence[tuple[str, Block, str]]) -> None:
        """Store small blocks (key, block, checksum) in one transaction and one statement, then evict past the
        size limit once. ``set`` asks for its key before writing the row and checks the limit after it: three
        more statements per block, a fifth to a third of a small block's cost. The columns are those ``set``
        writes for an inline value, and diskcache's triggers keep its count and volume. A key already present
        keeps its row: a key names its bytes, so they are the same."""
        now = time.time()
        values = [(key, now, now, checksum, block.length, MODE_RAW, sqlite3.Binary(block.view()))
                  for key, block, checksum in rows]  # fmt: skip
        with self._transact():
            self._con.executemany(  # type: ignore[attr-defined]
                "INSERT OR IGNORE INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag,"
                " size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, ?, ?, ?, NULL, ?)",
                values,
            )
            self.evicted += self.cull()


class BlockCache:
    def __init__(self, directory: str | Path, size_limit: int | None, *, create: bool = True):
        """Raises InvalidInput (one line: the directory and why) if the directory cannot be used; without
        ``create``, NotFound if it holds no cache yet (commands that only inspect or remove make none).
        ``size_limit`` None keeps the limit the cache was last opened with (by a mount, say)."""
        self.directory = Path(directory)
        if not create and not self.exists(directory):
            raise NotFound(f"no block cache in {self.directory} (nothing has been cached there)")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.directory, 0o700)  # cached bytes may be private data: owner only
            with SQLITE:
                self._cache = self._open(size_limit, timeout=60)
                # The event loop's own connection, for small blocks (SQLite keeps connections per thread): a
                # read never waits for a writer in WAL mode, and where SQLite is busy anyway it gives up at once.
                self._loop_reader = self._open(size_limit, timeout=0)
            # One open file description for this cache object's claims (see Claim).
            self._claims_fd = os.open(self.directory / "fetching.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except (OSError, sqlite3.Error) as exc:  # sqlite3: a directory we may enter but not write
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(f"cannot use the cache directory {self.directory}: {reason}") from exc
        self.corrupt_blocks = 0

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds a block cache (something was cached there)."""
        return (Path(directory) / "blocks" / "cache.db").is_file()

    def _open(self, size_limit: int | None, *, timeout: float) -> diskcache.Cache:
        limit = {} if size_limit is None else {"size_limit": size_limit}  # diskcache keeps settings in its index
        kind = _TunedCache if compat.checked("diskcache") else diskcache.Cache
        return kind(
            str(self.directory / "blocks"),
            **limit,
            # Oldest stored first: a hit then writes nothing. Keeping LRU order made every hit an UPDATE of
            # the block's row, which rewrites a small block's 64 KiB with it (200-300 us, under SQLite's
            # write lock); a block evicted while still in use is fetched and stored again, a newest one.
            eviction_policy="least-recently-stored",
            disk=_BlockDisk,
            disk_min_file_size=0,  # every block is its own file: no megabytes inside SQLite pages
            timeout=timeout,
            # Small blocks are 64 KiB rows: with SQLite's default checkpoint every 4 MiB of WAL, a batch of
            # them paid a checkpoint (and its fsync) each; every 64 MiB, a block costs 160 us instead of 230.
            sqlite_wal_autocheckpoint=16384,
        )

    def get_inline(self, key: str, length: int) -> Block | str | None:
        """A small block (stored inside the index) of ``length`` bytes, read without a worker thread; ABSENT
        when the index has no such key; None when it is not answered here (stored as a file, damaged, SQLite
        busy): then :meth:`get` decides."""
        if length > INLINE_MAX:
            return None
        try:
            with SQLITE:
                stored, checksum = self._loop_reader.get(key, tag=True)
        except (OSError, sqlite3.Error, diskcache.Timeout):
            return None
        if stored is None:
            return ABSENT
        if not isinstance(stored, bytes) or len(stored) != length:
            return None
        block = Block(stored, length)
        return block if _checksum(block) == checksum else None

    def get(self, key: str, buffer: mmap.mmap | bytearray, length: int) -> Block | None:
        """The cached block of ``length`` bytes, read into ``buffer``, if present and intact.

        A block of another length, or one that fails its checksum, is dropped.
        """
        try:
            # read=True hands back the open file of a large block, so the (long) read happens outside
            # diskcache's transaction and several blocks can be read from disk at once.
            with SQLITE:
                stored, checksum = self._cache.get(key, read=True, tag=True)
            if stored is None:
                return None
            if isinstance(stored, bytes):  # an inline block
                got = min(len(stored), len(buffer))
                buffer[:got] = memoryview(stored)[:got]
            else:
                with stored:
                    got = directio.read_into(stored.fileno(), buffer)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            log.warning("block cache read failed (%s); fetching from the store instead", exc)
            return None
        block = Block(buffer, got)
        if got != length or _checksum(block) != checksum:
            self.corrupt_blocks += 1
            log.warning("dropping corrupt cache block %s (%s); fetching it again", key,
                        "checksum mismatch" if got == length else f"{got} bytes, expected {length}")  # fmt: skip
            with SQLITE, contextlib.suppress(OSError, sqlite3.Error, diskcache.Timeout):  # refetched either way
                self._cache.delete(key)
            return None
        return block

    def put(self, key: str, block: Block) -> None:
        self.put_many([(key, block)])

    def put_many(self, blocks: Sequence[tuple[str, Block]]) -> None:
        """Store blocks; the inline ones in one transaction (one SQLite commit for many small files).
        Large ones are written one by one, outside any transaction: their file writes are long, and a
        transaction would keep every other writer of this cache (another mount, say) waiting."""
        inline = [(key, block) for key, block in blocks if block.length <= INLINE_MAX]
        try:
            if inline:
                with SQLITE:
                    self._store_inline(inline)
            for key, block in blocks:
                if block.length > INLINE_MAX:
                    with SQLITE:
                        self._cache.set(key, block, tag=_checksum(block))
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            log.warning("could not store %d block(s) in the cache (%s); serving them anyway", len(blocks), exc)

    def _store_inline(self, blocks: Sequence[tuple[str, Block]]) -> None:
        if isinstance(self._cache, _TunedCache):
            self._cache.insert_inline([(key, block, _checksum(block)) for key, block in blocks])
            return
        with self._cache.transact():
            for key, block in blocks:
                self._cache.set(key, block, tag=_checksum(block))

    def has(self, key: str) -> bool:
        """Whether the cache holds ``key`` (its bytes are checked when read, not here)."""
        return bool(self.present([key]))

    def present(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` the cache holds (their bytes are checked when read, not here): one query of the index
        per PRESENT_BATCH keys, where asking for each key costs a query (and its Python) per key. None of them if
        the index cannot be read (then they are fetched, as misses)."""
        found: set[str] = set()
        try:
            with SQLITE:
                for start in range(0, len(keys), PRESENT_BATCH):
                    batch = keys[start : start + PRESENT_BATCH]
                    marks = ",".join("?" * len(batch))
                    rows = self._cache._sql(f"SELECT key FROM Cache WHERE raw = 1 AND key IN ({marks})", batch)
                    found.update(key for (key,) in rows)
        except (OSError, sqlite3.Error, diskcache.Timeout):
            return set()
        return found

    def sizes(self) -> dict[str, int]:
        """Every cached block's key and stored size, from one query of the index: what `cache status`, `evict`
        and gc match against the keys of versions (a lookup per key would cost a query per block)."""
        try:
            with SQLITE:
                rows = self._cache._sql("SELECT key, size FROM Cache WHERE raw = 1").fetchall()
        except sqlite3.Error as exc:
            raise RefmountError(f"cannot read the block cache in {self.directory}: {exc}") from exc
        return {key: size for key, size in rows if isinstance(key, str)}

    def delete_many(self, keys: Iterable[str], *, batch: int = 1000) -> list[str]:
        """Drop the blocks ``keys``; the keys of those dropped (absent ones are skipped). A transaction per
        ``batch`` keys: a mount sharing the cache waits for one batch at a time, never for the whole removal. A
        block a reader has open stays readable by it (its file is unlinked, not overwritten)."""
        removed: list[str] = []
        pending = list(keys)
        try:
            for start in range(0, len(pending), batch):
                with SQLITE, self._cache.transact():
                    removed += [key for key in pending[start : start + batch] if self._cache.delete(key)]
        except (sqlite3.Error, diskcache.Timeout) as exc:
            raise RefmountError(f"could not remove blocks from the cache in {self.directory} "
                                f"({len(removed):,} removed): {exc or 'the cache stayed busy'}") from exc  # fmt: skip
        return removed

    @property
    def size_limit(self) -> int:
        return int(self._cache.size_limit)

    def claim(self, key: str) -> Claim:
        """Become the one process fetching ``key`` (see :class:`Claim`); blocks while another process is."""
        return Claim(self._claims_fd, key)

    def block_file(self, key: str) -> Path | None:
        """The file holding a large block (None if absent or inline): for tests that inspect or damage it."""
        with SQLITE:
            stored = self._cache.get(key, read=True)
        if stored is None or isinstance(stored, bytes):
            return None
        with stored:
            return Path(stored.name)

    @property
    def volume(self) -> int:
        with SQLITE:
            return self._cache.volume()

    @property
    def blocks(self) -> int:
        """How many blocks the cache holds (every process's)."""
        with SQLITE:
            return len(self._cache)

    @property
    def evictions(self) -> int | None:
        """Blocks this object's writes evicted past the size limit; None if this diskcache cannot say."""
        return self._cache.evicted if isinstance(self._cache, _TunedCache) else None

    def close(self) -> None:
        with SQLITE:
            self._cache.close()
            self._loop_reader.close()
        if self._claims_fd >= 0:
            os.close(self._claims_fd)
            self._claims_fd = -1


class Claim:
    """A cross-process single flight for one block: the holder fetches it, others wait and then find it.

    Two mounts sharing a cache directory (or ``refmount download`` beside a mount) that miss the same
    block at once would both fetch it. A fetcher therefore claims the block first: an open-file-description
    lock on one byte of ``fetching.lock`` at an offset derived from the key, which the kernel drops
    if the process dies. A claim that had to wait (``contended``) means another fetcher just finished:
    the caller looks in the cache again before fetching. The claim is released once the fetched block is
    written to the cache (or could not be).
    """

    _RANGE = 1 << 40  # offsets the keys spread over; a collision only makes two fetches take turns

    def __init__(self, fd: int, key: str) -> None:
        self._fd = fd
        self._offset = int(key[:16], 16) % self._RANGE
        try:
            self._lock(fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
            self.contended = False
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self._lock(fcntl.F_OFD_SETLKW, fcntl.F_WRLCK)  # waits for the other fetcher
            self.contended = True
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._lock(fcntl.F_OFD_SETLK, fcntl.F_UNLCK)

    def _lock(self, command: int, kind: int) -> None:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), native layout
        fcntl.fcntl(self._fd, command, struct.pack("hhqqi", kind, os.SEEK_SET, self._offset, 1, 0))
