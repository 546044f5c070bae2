"""Pinned block reads for the daemon and for `download`: single-flight, memory, disk cache.

Objects are read in fixed blocks (small files as one whole block). A block is looked up in memory,
then in the disk cache, then fetched from its store in a worker thread; every caller asking for a
block that is already being fetched waits for that one fetch, and so does another process sharing
the cache directory (see :class:`refmount.cache.Claim`). Fetched blocks reach the disk cache later,
in batches (:mod:`refmount.writeback`). Blocking calls never run on the trio thread.

Readahead is not decided here: :mod:`refmount.prefetch` decides what to fetch ahead and calls
:meth:`Reader.prefetch`.
"""

from __future__ import annotations

import collections
import logging
import mmap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import trio

from . import stores
from .buffers import Block, BufferPool
from .cache import ABSENT, INLINE_MAX, BlockCache, Claim, block_key
from .errors import StoreError
from .latency import Requests
from .manifest import Entry
from .uri import store_scheme
from .writeback import Writeback

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 << 20
MEMORY_BYTES = 128 << 20  # recently used blocks kept in memory: more than a full readahead window
MAX_FETCHES = 16  # concurrent store requests (threads)
MAX_PENDING_WRITE_BYTES = 64 << 20  # fetched blocks not yet in the disk cache
SPARE_BUFFERS = 8
# Readahead asks a store for up to 16 MiB at once: a topped-up window is then about four requests in
# flight. Through a running mount that read cold 7-11% faster than two of 32 MiB (SeaweedFS, eight
# interleaved rounds): a server reads one range at a time, so more ranges keep its disk busier.
MAX_BLOCKS_PER_REQUEST = 2


def block_keys(entry: Entry, block_size: int = BLOCK_SIZE) -> list[str]:
    """The cache keys of the blocks that reads of ``entry`` store, in block order: what the mount, `download` and
    `cache prefetch` put in the cache, and what `cache status`, `evict` and gc look for. None for an entry that is
    never fetched (unpinned, without a size, or empty); a small file is one block of its own length."""
    size = entry.size or 0
    if not entry.pinned or size <= 0:
        return []
    return [block_key(entry, block_size, index) for index in range(-(-size // block_size))]


@dataclass
class ReaderStats:
    requests: int = 0  # reads asked of the reader
    fetches: int = 0  # blocks fetched from stores (several may come in one store request)
    fetched_bytes: int = 0
    disk_hits: int = 0
    memory_hits: int = 0
    waited_for_other_process: int = 0  # blocks another process was fetching: found in the cache after it
    errors: int = 0


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


class Lease:
    """Bytes of a cached block, valid until :meth:`release` (the block's buffer is held meanwhile)."""

    __slots__ = ("_buffers", "_held", "view")

    def __init__(self, view: memoryview, buffers: BufferPool | None = None, held: mmap.mmap | None = None):
        self.view = view
        self._buffers, self._held = buffers, held

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._buffers.release(held)  # type: ignore[union-attr]

    def __enter__(self) -> memoryview:
        return self.view

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Fetch:
    """The buffers of one store request, shared by the trio side and the worker thread filling them.

    The fetch holds its buffers until its result is taken over. A fetch abandoned on cancel (a stalled
    store, Ctrl-C, an unmount) leaves the thread writing into them: whichever side finishes last
    releases them, so no buffer goes back to the pool while a thread may still write to it.
    """

    def __init__(self, buffers: BufferPool, lengths: list[int]) -> None:
        self.pool = buffers
        # Taken on the trio thread, one hold each; only blocks the cache writes as files need alignment.
        self.buffers = [buffers.take(n, aligned=n > INLINE_MAX) for n in lengths]
        self._lock = threading.Lock()
        self._thread_done = False
        self._abandoned = False

    def thread_finished(self) -> None:
        """Called by the worker thread when it stops touching the buffers."""
        with self._lock:
            self._thread_done = True
            release = self._abandoned
        if release:
            self.release()

    def abandon(self) -> None:
        """Called on the trio side when the fetch failed or was cancelled."""
        with self._lock:
            self._abandoned = True
            release = self._thread_done
        if release:
            self.release()

    def release(self) -> None:
        for buffer in self.buffers:
            self.pool.release(buffer)


class Reader:
    """Reads of exactly the logged bytes. Made by :func:`open_reader`, which runs its background tasks."""

    def __init__(self, cache: BlockCache | None, nursery: trio.Nursery, *, block_size: int = BLOCK_SIZE,
                 max_fetches: int = MAX_FETCHES, memory_bytes: int = MEMORY_BYTES):  # fmt: skip
        self.cache = cache
        self.block_size = block_size
        self.stats = ReaderStats()
        self.store_requests: dict[str, Requests] = {}  # by scheme: s3, gs, az (Azure's https too), http, https, file
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(max_fetches)
        self.buffers = BufferPool(block_size, spare=SPARE_BUFFERS)
        self._memory: collections.OrderedDict[str, Block] = collections.OrderedDict()  # each holds its buffer
        self._memory_bytes, self._memory_limit = 0, memory_bytes
        self._flights: dict[str, _Flight] = {}
        self.writeback = None if cache is None else Writeback(cache, self.buffers, budget=MAX_PENDING_WRITE_BYTES)

    def blocks(self, entry: Entry) -> int:
        size = entry.size or 0
        return max(1, -(-size // self.block_size))

    async def read(self, entry: Entry, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (fewer at end of file). Raises ChangedObject / StoreError."""
        with await self.lease(entry, offset, length) as view:
            return bytes(view)

    async def lease(self, entry: Entry, offset: int, length: int) -> Lease:
        """Like :meth:`read`, but without copying out of a cached block: the caller must release the lease
        (what the daemon replies with; a read across a block boundary is joined into a copy)."""
        self.stats.requests += 1
        size = entry.size or 0
        end = min(offset + length, size)
        if offset >= end:
            return Lease(memoryview(b""))
        first, last = offset // self.block_size, (end - 1) // self.block_size
        start = offset - first * self.block_size
        if first == last:
            block = await self._held_block(entry, first)
            return Lease(block.view(start, start + end - offset), self.buffers, block.buffer)
        parts = []
        for index in range(first, last + 1):
            block = await self._held_block(entry, index)
            parts.append(bytes(block.view()))
            self.buffers.release(block.buffer)
        return Lease(memoryview(b"".join(parts))[start : start + end - offset])

    def prefetch(self, entry: Entry, first: int, count: int, scopes: set[trio.CancelScope] | None = None) -> None:
        """Start fetching blocks ``first .. first+count-1`` in the background (those not in memory or under
        way). Runs of missing blocks are asked for in one store request each (up to MAX_BLOCKS_PER_REQUEST).
        Each background fetch's cancel scope is in ``scopes`` while it runs: cancelling them abandons it."""
        run: list[int] = []
        keys: list[str] = []
        for index in range(first, min(first + count, self.blocks(entry))):
            key = block_key(entry, self.block_size, index)
            if key in self._memory or key in self._flights:
                self._prefetch_run(entry, run, keys, scopes)
                run, keys = [], []
                continue
            run.append(index)
            keys.append(key)
            if len(run) == MAX_BLOCKS_PER_REQUEST:
                self._prefetch_run(entry, run, keys, scopes)
                run, keys = [], []
        self._prefetch_run(entry, run, keys, scopes)

    def fetch_small_file(self, entry: Entry) -> bool:
        """Start fetching a file that fits in one block, in the background, unless it is in memory, under way
        or in the disk cache's index (then it is read into memory now, on this thread). True if a fetch was
        started: the file was cold."""
        key = self._small_file_key(entry)
        if key is None:
            return False
        block = self._small_cached_block(entry, 0, key)
        if isinstance(block, Block):
            self.buffers.release(block.buffer)  # in memory now: the read will find it there
            return False
        self._prefetch_run(entry, [0], [key], None, absent=block == ABSENT)
        return True

    def small_file_in_memory(self, entry: Entry) -> Lease | None:
        """The whole of a small file (see :meth:`fits_one_block`) if its block is in memory, else None; no fetch,
        no disk cache lookup."""
        if not self.fits_one_block(entry):
            return None
        block = self._held_from_memory(block_key(entry, self.block_size, 0))
        return None if block is None else Lease(block.view(), self.buffers, block.buffer)

    def has_or_is_fetching(self, entry: Entry) -> bool:
        """Whether the first block of ``entry`` is in memory or being fetched (no disk cache lookup)."""
        key = block_key(entry, self.block_size, 0)
        return key in self._memory or key in self._flights

    def fits_one_block(self, entry: Entry) -> bool:
        """Whether ``entry`` is a small file: pinned, not empty, and read whole as one block."""
        return entry.pinned and 0 < (entry.size or 0) <= self.block_size

    def _small_file_key(self, entry: Entry) -> str | None:
        """The key of a small file (see :meth:`fits_one_block`), unless it is in memory or under way."""
        if not self.fits_one_block(entry):
            return None
        key = block_key(entry, self.block_size, 0)
        return None if key in self._memory or key in self._flights else key

    def _prefetch_run(self, entry: Entry, run: list[int], keys: list[str],
                      scopes: set[trio.CancelScope] | None, *, absent: bool = False) -> None:  # fmt: skip
        if run:
            flights = self._take_off(keys)  # now, so that readers arriving meanwhile wait for this fetch
            scope = trio.CancelScope()
            if scopes is not None:
                scopes.add(scope)
            self._nursery.start_soon(self._quiet_fetch, entry, run, keys, flights, scope, scopes, absent)

    async def _quiet_fetch(self, entry: Entry, run: list[int], keys: list[str], flights: list[_Flight],
                           scope: trio.CancelScope, scopes: set[trio.CancelScope] | None,
                           absent: bool) -> None:  # fmt: skip
        try:
            with scope:
                for block in await self._fetch(entry, run, keys, flights, absent=absent):
                    self.buffers.release(block.buffer)
        except Exception as exc:
            log.debug("readahead of %s blocks %d-%d failed: %s", entry.ref, run[0], run[-1], exc)
        finally:
            if scopes is not None:
                scopes.discard(scope)
        if scope.cancelled_caught:  # the flights failed with Cancelled: their waiters fetch themselves
            log.debug("readahead of %s blocks %d-%d cancelled", entry.ref, run[0], run[-1])

    async def block(self, entry: Entry, index: int) -> bytes:
        """A copy of one whole block (for tests and tools; the read path uses :meth:`lease`)."""
        block = await self._held_block(entry, index)
        try:
            return bytes(block.view())
        finally:
            self.buffers.release(block.buffer)

    async def _held_block(self, entry: Entry, index: int) -> Block:
        """One whole block, held for the caller (who must release its buffer): from memory, else from the
        fetch already under way, else fetched now."""
        key = block_key(entry, self.block_size, index)
        while True:
            block = self._held_from_memory(key)
            if block is not None:
                return block
            flight = self._flights.get(key)
            if flight is None:
                cached = self._small_cached_block(entry, index, key)
                if isinstance(cached, Block):
                    return cached
                flights = self._take_off([key])
                return (await self._fetch(entry, [index], [key], flights, absent=cached == ABSENT))[0]
            await flight.done.wait()
            if flight.error is not None and not isinstance(flight.error, trio.Cancelled):
                raise flight.error
            # Fetched: in memory now (unless evicted meanwhile: then it is asked for again). Cancelled
            # with its requester (not with us): we fetch it ourselves.

    def _held_from_memory(self, key: str) -> Block | None:
        """The block ``key`` if it is in memory (now the most recently used), held for the caller."""
        block = self._memory.get(key)
        if block is not None:
            self._memory.move_to_end(key)
            self.stats.memory_hits += 1
            self.buffers.hold(block.buffer)
        return block

    def _small_cached_block(self, entry: Entry, index: int, key: str) -> Block | str | None:
        """A small block from the disk cache, read on this thread (held for the caller); ABSENT if the cache
        has no such block; None if not answered here.

        A worker-thread handoff costs more than reading a small block stored inside SQLite (about 0.1 ms
        against 0.05): a disk-warm small file is then answered without one. Whatever this cannot answer
        (large, damaged, SQLite busy) takes the thread path, which decides; a block found absent is fetched
        without a second look (one SQLite transaction, its locks and GIL handoffs fewer per cold file).
        """
        if self.cache is None or not entry.pinned:
            return None
        block = self.cache.get_inline(key, self._length(entry, index))
        if not isinstance(block, Block):
            return block
        self.stats.disk_hits += 1
        self._remember(key, block)
        self.buffers.hold(block.buffer)
        return block

    def _length(self, entry: Entry, index: int) -> int:
        return max(0, min(self.block_size, (entry.size or 0) - index * self.block_size))

    def _take_off(self, keys: list[str]) -> list[_Flight]:
        """Register the fetch of the blocks ``keys``: from now on, readers of them wait for it."""
        flights = []
        for key in keys:
            flight = self._flights[key] = _Flight()
            flights.append(flight)
        return flights

    async def _fetch(self, entry: Entry, run: list[int], keys: list[str], flights: list[_Flight], *,
                     absent: bool = False) -> list[Block]:  # fmt: skip
        """Fetch consecutive blocks ``run`` (from the disk cache or the store), ``keys`` theirs; the blocks come
        back held for the caller. ``absent``: the cache was just found not to hold them."""
        lengths = [self._length(entry, index) for index in run]
        fetch = _Fetch(self.buffers, lengths)
        try:
            # Abandoned when cancelled (Ctrl-C, unmount): a store that stopped answering must not hold us
            # for its timeouts and retries. The thread releases the buffers when it is done with them.
            loaded = await trio.to_thread.run_sync(self._load, entry, run, keys, lengths, fetch, absent,
                                                   limiter=self._limiter, abandon_on_cancel=True)  # fmt: skip
        except BaseException as exc:
            fetch.abandon()
            self._grounded(keys, flights, exc)
            raise
        return await self._landed(keys, flights, loaded, fetch)

    async def fetch_uncached(self, entries: list[Entry]) -> list[int | Exception]:
        """Fetch files that fit in one block each and that the disk cache was just found not to hold (see
        :mod:`refmount.fs.sweep`), unless in memory or under way: one after another in one worker thread (one
        handoff for them all), kept in memory and written to the cache. Per file, the bytes fetched (0: not
        fetched here) or why it failed; after a failure the rest of the batch is not tried (a failing store would
        hold it up): readers waiting for those files fetch them themselves."""
        results: list[int | Exception] = [0] * len(entries)
        wanted = [(i, key) for i, entry in enumerate(entries) if (key := self._small_file_key(entry)) is not None]
        if not wanted:
            return results
        files, keys = [entries[i] for i, _ in wanted], [key for _, key in wanted]
        flights = self._take_off(keys)
        fetch = _Fetch(self.buffers, [entry.size or 0 for entry in files])
        try:
            loaded = await trio.to_thread.run_sync(self._load_files, files, keys, fetch,
                                                   limiter=self._limiter, abandon_on_cancel=True)  # fmt: skip
        except BaseException as exc:
            fetch.abandon()
            self._grounded(keys, flights, exc)
            raise
        landed, failed = [], []
        for (i, key), flight, buffer, (block, claim) in zip(wanted, flights, fetch.buffers, loaded, strict=True):
            if block is None:  # not tried: its waiters find no flight and fetch it themselves
                del self._flights[key]
                flight.done.set()
                failed.append(buffer)
            elif isinstance(block, Exception):
                self._grounded([key], [flight], block)
                failed.append(buffer)
                results[i] = block
            else:
                landed.append((key, flight, block, claim))
                results[i] = block.length
        blocks = await self._landed([k for k, _, _, _ in landed], [f for _, f, _, _ in landed],
                                    [(b, c) for _, _, b, c in landed], fetch)  # fmt: skip
        for buffer in [block.buffer for block in blocks] + failed:
            self.buffers.release(buffer)  # the blocks are kept in memory by _landed
        return results

    def _grounded(self, keys: list[str], flights: list[_Flight], exc: BaseException) -> None:
        """The fetch of ``keys`` failed with ``exc``: their waiters see it (or, cancelled, fetch themselves)."""
        for key, flight in zip(keys, flights, strict=True):
            flight.error = exc
            del self._flights[key]
            flight.done.set()
        if not isinstance(exc, trio.Cancelled):
            self.stats.errors += 1

    async def _landed(self, keys: list[str], flights: list[_Flight], loaded: list[tuple[Block, Claim | None]],
                      fetch: _Fetch) -> list[Block]:  # fmt: skip
        """Fetched blocks: kept in memory, their waiters woken, and queued for the disk cache (each claim is
        released once its block is written). Returns the blocks held for the caller."""
        blocks = [block for block, _ in loaded]
        for key, flight, block in zip(keys, flights, blocks, strict=True):
            self._remember(key, block)
            del self._flights[key]
            flight.done.set()
        claims = [claim for _, claim in loaded]
        try:
            for i, (key, block) in enumerate(zip(keys, blocks, strict=True)):
                claim = claims[i]
                if claim is not None and self.writeback is not None:
                    await self.writeback.submit(key, block, claim.release)  # the writeback releases the claim
                    claims[i] = None
        except BaseException:
            fetch.release()
            raise
        finally:
            for claim in claims:  # not handed to the writeback (no cache, or cancelled waiting for room)
                if claim is not None:
                    claim.release()
        return blocks

    def _remember(self, key: str, block: Block) -> None:
        self.buffers.hold(block.buffer)
        self._memory[key] = block
        self._memory_bytes += block.length
        while self._memory_bytes > self._memory_limit and len(self._memory) > 1:
            _, old = self._memory.popitem(last=False)
            self._memory_bytes -= old.length
            self.buffers.release(old.buffer)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the blocks kept in memory."""
        return self._memory_bytes

    def forget_memory(self) -> None:
        """Drop every block held in memory (at the end of the reader's life)."""
        while self._memory:
            _, old = self._memory.popitem(last=False)
            self.buffers.release(old.buffer)
        self._memory_bytes = 0

    def _load(self, entry: Entry, run: list[int], keys: list[str], lengths: list[int], fetch: _Fetch,
              absent: bool) -> list[tuple[Block, Claim | None]]:  # fmt: skip
        """In a worker thread: each block of ``run`` from the disk cache into its buffer, else the missing
        ones in one ranged read from the store. A fetched block comes with the claim that the writeback
        releases once it is in the cache (None: found in the cache, or no cache)."""
        claims: list[Claim | None] = [None] * len(run)
        with _worker_side(fetch, claims):
            if not entry.pinned:  # whatever the store holds now is not what was logged: never one byte of it
                raise stores.unpinned(entry)
            loaded = self._from_cache(keys, lengths, fetch.buffers, claims, absent=absent)
            missing = [i for i, block in enumerate(loaded) if block is None]
            if missing:
                first, last = missing[0], missing[-1]  # a cached block in between is fetched again
                targets = [memoryview(fetch.buffers[i])[: lengths[i]] for i in range(first, last + 1)]
                self._read_exactly(entry, run[first] * self.block_size, targets, blocks=len(missing))
                for i in missing:
                    loaded[i] = Block(fetch.buffers[i], lengths[i])
            return [(block, claim) for block, claim in zip(loaded, claims, strict=True)]  # type: ignore[misc]

    def _load_files(self, entries: list[Entry], keys: list[str],
                    fetch: _Fetch) -> list[tuple[Block | Exception | None, Claim | None]]:  # fmt: skip
        """In a worker thread: whole small files the cache was found not to hold, one store request each, after
        claiming them all (a file another process fetched meanwhile is read from the cache). A file that failed
        comes back as its exception; those after it, not tried, as None."""
        lengths = [entry.size or 0 for entry in entries]
        claims: list[Claim | None] = [None] * len(entries)
        with _worker_side(fetch, claims):
            loaded: list[Block | Exception | None] = list(
                self._from_cache(keys, lengths, fetch.buffers, claims, absent=True)
            )
            failure: Exception | None = None
            for i, entry in enumerate(entries):
                if loaded[i] is not None:
                    continue
                if failure is None:
                    try:
                        self._read_exactly(entry, 0, [memoryview(fetch.buffers[i])[: lengths[i]]])
                        loaded[i] = Block(fetch.buffers[i], lengths[i])
                        continue
                    except Exception as exc:
                        failure = loaded[i] = exc
                if claims[i] is not None:
                    claims[i].release()  # type: ignore[union-attr]
                    claims[i] = None
            return [(block, claim) for block, claim in zip(loaded, claims, strict=True)]  # type: ignore[misc]

    def _read_exactly(self, entry: Entry, offset: int, targets: list[memoryview], *, blocks: int = 1) -> None:
        """Fill ``targets`` (``blocks`` blocks) from one store request, or raise StoreError if it returns less."""
        expected = sum(len(target) for target in targets)
        got = self._store_read(entry, offset, targets)
        if got != expected:
            raise StoreError(f"{entry.path}: {entry.ref} returned {got} bytes at offset {offset}, expected {expected}")
        self.stats.fetches += blocks
        self.stats.fetched_bytes += expected

    def _store_read(self, entry: Entry, offset: int, targets: list[memoryview]) -> int:
        """One store request (in a worker thread), counted and timed under its scheme in :attr:`store_requests`."""
        scheme = store_scheme(entry.ref)
        requests = self.store_requests.get(scheme)
        if requests is None:
            requests = self.store_requests.setdefault(scheme, Requests())
        started = time.perf_counter_ns()
        got = 0
        try:
            got = stores.store_for(entry.ref).read_into(entry, offset, targets)
            return got
        except BaseException:
            with requests.lock:
                requests.errors += 1
            raise
        finally:
            duration = time.perf_counter_ns() - started
            with requests.lock:
                requests.observe_ns(duration)
                requests.bytes += got

    def _from_cache(self, keys: list[str], lengths: list[int], buffers: list[mmap.mmap | bytearray],
                    claims: list[Claim | None], *, absent: bool = False) -> list[Block | None]:  # fmt: skip
        """The blocks the disk cache has; the missing ones are claimed (``claims``) for fetching, after
        waiting for any other process already fetching them and looking again. ``absent``: the caller has
        just looked (a block written since by another process is then fetched once more, and stays right)."""
        if self.cache is None:
            return [None] * len(keys)
        loaded: list[Block | None] = [None] * len(keys)
        if not absent:
            loaded = [self.cache.get(key, buffer, n) for key, buffer, n in zip(keys, buffers, lengths, strict=True)]
        self.stats.disk_hits += sum(block is not None for block in loaded)
        for i in sorted((i for i, block in enumerate(loaded) if block is None), key=lambda i: keys[i]):
            claim = self.cache.claim(keys[i])  # in key order: two processes never wait for each other in a cycle
            if claim.contended and (block := self.cache.get(keys[i], buffers[i], lengths[i])) is not None:
                claim.release()
                loaded[i] = block
                self.stats.disk_hits += 1
                self.stats.waited_for_other_process += 1
            else:
                claims[i] = claim
        return loaded


@contextmanager
def _worker_side(fetch: _Fetch, claims: list[Claim | None]) -> Iterator[None]:
    """A worker thread's part of a fetch: its claims are let go if it fails, and the buffers go back to whichever
    side of the fetch is last done with them when it ends."""
    try:
        yield
    except BaseException:
        for claim in claims:
            if claim is not None:
                claim.release()
        raise
    finally:
        fetch.thread_finished()


@asynccontextmanager
async def open_reader(cache: BlockCache | None, **settings: int) -> AsyncIterator[Reader]:
    """A :class:`Reader` whose background work (readahead, cache writes) runs until the block ends.

    On a normal exit the blocks fetched so far are written to the cache first; readahead still under
    way is cancelled.
    """
    async with trio.open_nursery() as nursery:
        reader = Reader(cache, nursery, **settings)
        if reader.writeback is not None:
            nursery.start_soon(reader.writeback.run)
        try:
            yield reader
            if reader.writeback is not None:
                await reader.writeback.drain()
        finally:
            nursery.cancel_scope.cancel()
            reader.forget_memory()
