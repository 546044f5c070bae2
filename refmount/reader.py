"""Pinned block reads for the daemon and for `download`: single-flight, readahead, disk cache.

Objects are read in fixed blocks (small files as one whole block). A block is looked up in a
small in-memory LRU, then in the disk cache, then fetched from its store in a worker thread; all
callers asking for a block that is already being fetched wait for that one fetch. Blocking SDK
calls never run on the trio thread.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field

import trio

from . import stores
from .cache import BlockCache, block_key
from .errors import StoreError
from .manifest import Entry

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 << 20
MEMORY_BLOCKS = 12  # recently used blocks kept decoded in memory: a sequential reader hits them
MAX_FETCHES = 16  # concurrent store requests (threads)
MAX_READAHEAD_BLOCKS = 4
MAX_PENDING_CACHE_WRITES = 8  # blocks handed to the disk cache but not yet written


@dataclass
class ReaderStats:
    requests: int = 0  # read() calls
    fetches: int = 0  # blocks fetched from stores
    fetched_bytes: int = 0
    disk_hits: int = 0
    memory_hits: int = 0
    errors: int = 0


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    error: BaseException | None = None


class Reader:
    """Reads of exactly the logged bytes. Use inside trio, with a nursery for readahead tasks."""

    def __init__(self, cache: BlockCache | None, *, block_size: int = BLOCK_SIZE, max_fetches: int = MAX_FETCHES,
                 memory_blocks: int = MEMORY_BLOCKS):  # fmt: skip
        self.cache = cache
        self.block_size = block_size
        self.stats = ReaderStats()
        self._limiter = trio.CapacityLimiter(max_fetches)
        self._memory: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._memory_blocks = memory_blocks
        self._flights: dict[str, _Flight] = {}
        self._nursery: trio.Nursery | None = None
        self._cache_writes = trio.Semaphore(MAX_PENDING_CACHE_WRITES)

    def attach(self, nursery: trio.Nursery) -> None:
        """Background readahead runs in ``nursery`` (without one, readahead is skipped)."""
        self._nursery = nursery

    def blocks(self, entry: Entry) -> int:
        size = entry.size or 0
        return max(1, -(-size // self.block_size))

    async def read(self, entry: Entry, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at end of file). Raises ChangedObject / StoreError."""
        self.stats.requests += 1
        size = entry.size or 0
        end = min(offset + length, size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        if first == last:
            block = await self.block(entry, first)
            start = offset - first * self.block_size
            return block[start : start + end - offset]
        parts = [await self.block(entry, i) for i in range(first, last + 1)]
        joined = b"".join(parts)
        start = offset - first * self.block_size
        return joined[start : start + end - offset]

    def prefetch(self, entry: Entry, first: int, count: int) -> None:
        """Start fetching blocks ``first .. first+count-1`` in the background (if not cached)."""
        if self._nursery is None:
            return
        for index in range(first, min(first + count, self.blocks(entry))):
            key = block_key(entry, self.block_size, index)
            if key not in self._memory and key not in self._flights:
                self._nursery.start_soon(self._prefetch_one, entry, index)

    async def _prefetch_one(self, entry: Entry, index: int) -> None:
        try:
            await self.block(entry, index)
        except Exception as exc:
            log.debug("readahead of %s block %d failed: %s", entry.ref, index, exc)

    async def block(self, entry: Entry, index: int) -> bytes:
        key = block_key(entry, self.block_size, index)
        data = self._memory.get(key)
        if data is not None:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            return data
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight()
            try:
                flight.data, fetched = await trio.to_thread.run_sync(
                    self._load, entry, index, key, limiter=self._limiter
                )
                self._remember(key, flight.data)
                if fetched:
                    await self._store_later(key, flight.data)
            except BaseException as exc:
                flight.error = exc
                self.stats.errors += 1
                raise
            finally:
                del self._flights[key]
                flight.done.set()
            return flight.data
        await flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.data is not None
        return flight.data

    def _remember(self, key: str, data: bytes) -> None:
        self._memory[key] = data
        while len(self._memory) > self._memory_blocks:
            self._memory.popitem(last=False)

    async def _store_later(self, key: str, data: bytes) -> None:
        """Write a fetched block to the disk cache without making the reader wait for the disk.

        Past MAX_PENDING_CACHE_WRITES outstanding writes the reader does wait: memory stays bounded
        when the network is faster than the local disk.
        """
        if self.cache is None:
            return
        await self._cache_writes.acquire()

        async def write() -> None:
            try:
                await trio.to_thread.run_sync(self.cache.put, key, data)  # type: ignore[union-attr]
            finally:
                self._cache_writes.release()

        if self._nursery is None:
            await write()
        else:
            self._nursery.start_soon(write)

    def _load(self, entry: Entry, index: int, key: str) -> tuple[bytes, bool]:
        """In a worker thread: the disk cache, else one ranged read from the store (fetched=True)."""
        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.disk_hits += 1
                return cached, False
        offset = index * self.block_size
        expected = max(0, min(self.block_size, (entry.size or 0) - offset))
        data = stores.store_for(entry.ref).read(entry, offset, expected)
        if len(data) != expected:
            raise StoreError(f"{entry.path}: {entry.ref} returned {len(data)} bytes at offset {offset}, "
                             f"expected {expected}")  # fmt: skip
        self.stats.fetches += 1
        self.stats.fetched_bytes += len(data)
        return data, True
