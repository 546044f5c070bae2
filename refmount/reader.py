"""Pinned block reads for the daemon and for `download`: single-flight, readahead, disk cache.

Objects are read in fixed blocks (small files as one whole block). A block is looked up in a
small in-memory LRU, then in the disk cache, then fetched from its store in a worker thread; all
callers asking for a block that is already being fetched wait for that one fetch. Blocking SDK
calls never run on the trio thread.
"""

from __future__ import annotations

import collections
import logging
import mmap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from . import stores
from .buffers import Block, BufferPool
from .cache import BlockCache, block_key
from .errors import StoreError
from .manifest import Entry

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 << 20
MEMORY_BLOCKS = 16  # recently used blocks kept in memory: more than a full readahead window
MAX_FETCHES = 16  # concurrent store requests (threads)
MAX_READAHEAD_BLOCKS = 8  # up to 64 MiB ahead of a sequential reader
# Readahead asks a store for up to 16 MiB at once: a topped-up window is then about four requests in
# flight. Through a running mount that read cold 7-11% faster than two of 32 MiB (SeaweedFS, eight
# interleaved rounds): a server reads one range at a time, so more ranges keep its disk busier.
MAX_BLOCKS_PER_REQUEST = 2
MAX_PENDING_CACHE_WRITES = 8  # blocks handed to the disk cache but not yet written


@dataclass
class ReaderStats:
    requests: int = 0  # read() calls
    fetches: int = 0  # blocks fetched from stores (several may come in one store request)
    fetched_bytes: int = 0
    disk_hits: int = 0
    memory_hits: int = 0
    errors: int = 0


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    data: Block | None = None
    error: BaseException | None = None


class Reader:
    """Reads of exactly the logged bytes. Use inside trio, with a nursery for readahead tasks."""

    def __init__(self, cache: BlockCache | None, *, block_size: int = BLOCK_SIZE, max_fetches: int = MAX_FETCHES,
                 memory_blocks: int = MEMORY_BLOCKS):  # fmt: skip
        self.cache = cache
        self.block_size = block_size
        self.stats = ReaderStats()
        self._limiter = trio.CapacityLimiter(max_fetches)
        self._buffers = BufferPool(block_size, spare=MAX_READAHEAD_BLOCKS)
        self._memory: collections.OrderedDict[str, Block] = collections.OrderedDict()
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
        return bytes(await self.view(entry, offset, length))

    async def view(self, entry: Entry, offset: int, length: int) -> memoryview:
        """Like :meth:`read`, but without copying out of the cached block (what the daemon replies with).

        The block's buffer is reused only once the view (and every slice of it) is gone.
        """
        self.stats.requests += 1
        size = entry.size or 0
        end = min(offset + length, size)
        if offset >= end:
            return memoryview(b"")
        first, last = offset // self.block_size, (end - 1) // self.block_size
        start = offset - first * self.block_size
        if first == last:
            return (await self.block(entry, first)).view(start, start + end - offset)
        joined = b"".join([(await self.block(entry, i)).view() for i in range(first, last + 1)])
        return memoryview(joined)[start : start + end - offset]

    async def chunks(self, entry: Entry, *, readahead: int = 2) -> AsyncIterator[memoryview]:
        """The whole object in order, block by block, the next ``readahead`` blocks fetched meanwhile.

        For whole-file consumers outside the mount (``download``); readahead needs :meth:`attach`.
        """
        for index in range(self.blocks(entry) if entry.size else 0):
            self.prefetch(entry, index + 1, readahead)
            yield await self.view(entry, index * self.block_size, self.block_size)

    def prefetch(self, entry: Entry, first: int, count: int) -> None:
        """Start fetching blocks ``first .. first+count-1`` in the background (those not cached yet).

        Consecutive missing blocks are asked for in one store request (up to MAX_BLOCKS_PER_REQUEST):
        a sequential reader gets large requests while the cache keeps its block granularity.
        """
        if self._nursery is None:
            return
        run: list[int] = []
        for index in range(first, min(first + count, self.blocks(entry))):
            key = block_key(entry, self.block_size, index)
            if key in self._memory or key in self._flights:
                self._prefetch_run(entry, run)
                run = []
                continue
            run.append(index)
            if len(run) == MAX_BLOCKS_PER_REQUEST:
                self._prefetch_run(entry, run)
                run = []
        self._prefetch_run(entry, run)

    def _prefetch_run(self, entry: Entry, run: list[int]) -> None:
        if run:
            assert self._nursery is not None
            flights = self._take_off(entry, run)  # now, so that readers arriving meanwhile wait for this fetch
            self._nursery.start_soon(self._quiet_fetch, entry, run, flights)

    async def _quiet_fetch(self, entry: Entry, run: list[int], flights: list[_Flight]) -> None:
        try:
            await self._fetch(entry, run, flights)
        except Exception as exc:
            log.debug("readahead of %s blocks %d-%d failed: %s", entry.ref, run[0], run[-1], exc)

    async def block(self, entry: Entry, index: int) -> Block:
        """One whole block: from memory, else from the fetch already under way, else fetched now."""
        key = block_key(entry, self.block_size, index)
        while True:
            block = self._memory.get(key)
            if block is not None:
                self._memory.move_to_end(key)
                self.stats.memory_hits += 1
                return block
            flight = self._flights.get(key)
            if flight is None:
                return (await self._fetch(entry, [index], self._take_off(entry, [index])))[0]
            await flight.done.wait()
            if flight.data is not None:
                return flight.data
            if not isinstance(flight.error, trio.Cancelled):
                raise flight.error  # type: ignore[misc]
            # The fetch was cancelled with its requester (not with us): try again ourselves.

    def _take_off(self, entry: Entry, run: list[int]) -> list[_Flight]:
        """Register the fetch of consecutive blocks ``run``: from now on, readers of them wait for it."""
        flights = []
        for index in run:
            flight = self._flights[block_key(entry, self.block_size, index)] = _Flight()
            flights.append(flight)
        return flights

    async def _fetch(self, entry: Entry, run: list[int], flights: list[_Flight]) -> list[Block]:
        keys = [block_key(entry, self.block_size, index) for index in run]
        lengths = [max(0, min(self.block_size, (entry.size or 0) - index * self.block_size)) for index in run]
        buffers = [self._buffers.take(n) for n in lengths]  # taken here: the pool belongs to the trio thread
        try:
            # Abandoned when cancelled (Ctrl-C, unmount): a store that stopped answering must not hold us
            # for its timeouts and retries. The thread keeps its buffers referenced, so none is reused under it.
            loaded = await trio.to_thread.run_sync(self._load, entry, run, keys, lengths, buffers,
                                                   limiter=self._limiter, abandon_on_cancel=True)  # fmt: skip
            for key, flight, (block, _) in zip(keys, flights, loaded, strict=True):
                flight.data = block
                self._remember(key, block)
            for key, (block, fetched) in zip(keys, loaded, strict=True):
                if fetched:
                    await self._store_later(key, block)
        except BaseException as exc:
            for buffer in buffers:  # those already in memory are reused only once they leave it
                self._buffers.retire(buffer)
            for flight in flights:
                flight.error = exc
            if not isinstance(exc, trio.Cancelled):
                self.stats.errors += 1
            raise
        finally:
            for key, flight in zip(keys, flights, strict=True):
                del self._flights[key]
                flight.done.set()
        return [block for block, _ in loaded]

    def _remember(self, key: str, block: Block) -> None:
        self._memory[key] = block
        while len(self._memory) > self._memory_blocks:
            _, old = self._memory.popitem(last=False)
            self._buffers.retire(old.buffer)

    async def _store_later(self, key: str, block: Block) -> None:
        """Write a fetched block to the disk cache without making the reader wait for the disk.

        Past MAX_PENDING_CACHE_WRITES outstanding writes the reader does wait: memory stays bounded
        when the network is faster than the local disk.
        """
        if self.cache is None:
            return
        await self._cache_writes.acquire()

        async def write() -> None:
            try:
                await trio.to_thread.run_sync(self.cache.put, key, block)  # type: ignore[union-attr]
            finally:
                self._cache_writes.release()

        if self._nursery is None:
            await write()
        else:
            self._nursery.start_soon(write)

    def _load(
        self, entry: Entry, run: list[int], keys: list[str], lengths: list[int], buffers: list[mmap.mmap]
    ) -> list[tuple[Block, bool]]:
        """In a worker thread: each block of ``run`` from the disk cache into its buffer, else the missing
        ones in one ranged read from the store (marked fetched=True)."""
        if not entry.pinned:  # whatever the store holds now is not what was logged: never one byte of it
            raise stores.unpinned(entry)
        loaded: list[Block | None] = [None] * len(run)
        if self.cache is not None:
            loaded = [self.cache.get(key, buffer, n) for key, buffer, n in zip(keys, buffers, lengths, strict=True)]
        self.stats.disk_hits += sum(block is not None for block in loaded)
        missing = [i for i, block in enumerate(loaded) if block is None]
        if missing:
            first, last = missing[0], missing[-1]  # a cached block in between is fetched again
            offset = run[first] * self.block_size
            targets = [memoryview(buffers[i])[: lengths[i]] for i in range(first, last + 1)]
            expected = sum(lengths[first : last + 1])
            got = stores.store_for(entry.ref).read_into(entry, offset, targets)
            if got != expected:
                raise StoreError(f"{entry.path}: {entry.ref} returned {got} bytes at offset {offset}, "
                                 f"expected {expected}")  # fmt: skip
            self.stats.fetches += len(missing)
            self.stats.fetched_bytes += expected
            for i in missing:
                loaded[i] = Block(buffers[i], lengths[i])
        return [(block, i in missing) for i, block in enumerate(loaded)]  # type: ignore[misc]
