"""Readahead across files: the rest of a directory that a job reads file by file, fetched before it asks.

A training epoch reads every file of its dataset once, in a shuffled order, one file at a time per
worker: each cold file then waits a whole store round trip, and the store sees one or two requests at a
time. Readahead inside a file cannot help there; fetching the directory's other small files several at a
time can, since the job will open them soon, in whatever order.

- A directory is swept once ``after`` of its small files were looked up cold (a `cat` of a file or two
  sweeps nothing), or at its first cold lookup once ``after`` files of its version were: a shuffled epoch
  over a dataset of many directories reads each directory's first files long before its third, and each
  such file waits for a whole GET. Its small files (those of one block) that the cache lacks are fetched,
  ``batch`` after one another in each of ``jobs`` worker threads (one handoff per batch): the reader's other
  fetch threads stay free for the files being read.
- A sweep goes only as far as the job goes: every small file looked up lets it fetch ``ahead`` files more
  (at most ``ahead * MAX_CREDIT_LOOKUPS`` in hand), so a job that stops reading stops the sweep soon after.
- Swept files not yet looked up hold at most a quarter of the cache's size: a sweep never evicts what it
  fetched before it is read. One not looked up within AHEAD_TTL_S stops counting.
- ``MAX_FAILURES`` failed fetches in a row end a directory's sweep (the store is failing: readers will see why).

Fetches go through the reader, with its pins, its single flight and its claims across processes: a file
being swept is waited for by its reader, not fetched again by this daemon, and waited for by another
process sharing the cache that misses it meanwhile.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import trio

from ..cache import block_key
from ..manifest import Entry
from ..reader import MEMORY_BYTES, Reader
from .namespace import Namespace
from .nodes import VersionNode

log = logging.getLogger(__name__)

AHEAD_PER_LOOKUP = 16  # files a sweep may fetch per small file looked up (the default of --dir-readahead)
SWEEP_AFTER = 3  # cold lookups in a directory before the rest of it is fetched
# A shuffled epoch over many directories reads files the sweep has not reached yet, and each such read waits
# for a whole GET: 12 batches of 8 (of the reader's MAX_FETCHES threads, 4 left for those reads) reach them
# sooner than 8 of 4, for less CPU per file (fewer handoffs): DataLoader epoch 1 +12%, see the README.
SWEEP_JOBS = 12  # batches swept at once (a worker thread each)
SWEEP_BATCH = 8  # files a batch fetches one after another
AHEAD_SHARE = 4  # swept files not yet looked up take at most this part of the cache
AHEAD_TTL_S = 600.0
MAX_CREDIT_LOOKUPS = 64  # lookups' worth of credit kept: a new sweep after a quiet time starts small
MAX_FAILURES = 8
LISTING_BATCH = 1000
KNOWN_DIRECTORIES = 4096  # directories whose cold lookups are counted (the least recent forgotten)


@dataclass
class SweepStats:
    directories: int = 0  # directory sweeps started
    files: int = 0  # files fetched ahead of their lookup
    bytes: int = 0
    used: int = 0  # swept files looked up afterwards
    failures: int = 0  # fetches that failed (readers fetch those files themselves)


class Sweeper:
    """Sweeps directories in the background (:meth:`run`); told of every lookup of a file (:meth:`looked_up`)."""

    def __init__(self, namespace: Namespace, reader: Reader, *, ahead: int = AHEAD_PER_LOOKUP,
                 after: int = SWEEP_AFTER, jobs: int = SWEEP_JOBS, batch: int = SWEEP_BATCH,
                 ahead_bytes_limit: int | None = None):  # fmt: skip
        self.ns, self.reader = namespace, reader
        self.ahead, self.after, self.batch = ahead, after, batch
        cache_bytes = reader.cache.size_limit if reader.cache is not None else MEMORY_BYTES
        self.ahead_bytes_limit = ahead_bytes_limit if ahead_bytes_limit is not None else cache_bytes // AHEAD_SHARE
        self.stats = SweepStats()
        self.ahead_bytes = 0  # of files being swept or swept, not yet looked up
        self._ahead: collections.OrderedDict[int, tuple[int, float]] = collections.OrderedDict()  # inode: bytes, when
        self._fetching: dict[int, int] = {}  # inodes being swept: their bytes
        self._cold: collections.OrderedDict[int, int] = collections.OrderedDict()  # directory inode: cold lookups
        self._cold_in_version: collections.Counter[int] = collections.Counter()  # slot: cold lookups (to `after`)
        self._queue: collections.deque[VersionNode] = collections.deque()
        self._queued: set[int] = set()  # directories queued or being swept
        self._credit = 0
        self._failures_in_row = 0
        self._jobs = trio.Semaphore(jobs)
        self._changed = trio.Event()

    # -- on the event loop, per lookup --------------------------------------------------------------
    def looked_up(self, directory: VersionNode, file: VersionNode, cold: bool) -> None:
        """A file of ``directory`` was looked up (``cold``: its fetch was started by the lookup)."""
        inode = file.inode
        swept = self._ahead.pop(inode, None)
        if swept is not None:
            self.ahead_bytes -= swept[0]
            self.stats.used += 1
        elif inode in self._fetching:  # looked up while being swept: not ahead any more (used, if fetched)
            self.ahead_bytes -= self._fetching.pop(inode)
        self._credit = min(self._credit + self.ahead, self.ahead * MAX_CREDIT_LOOKUPS)
        if cold:
            self._count_cold(directory)
        self._changed.set()

    def _count_cold(self, directory: VersionNode) -> None:
        key = directory.inode
        if key in self._queued:
            return
        version = directory.slot.slot
        if self._cold_in_version[version] < self.after:
            self._cold_in_version[version] += 1
        count = self._cold.pop(key, 0) + 1
        if count < self.after and self._cold_in_version[version] < self.after:
            self._cold[key] = count
            if len(self._cold) > KNOWN_DIRECTORIES:
                self._cold.popitem(last=False)
            return
        self._queued.add(key)
        self._queue.append(directory)

    # -- in the background ----------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as fetches:
            while True:
                while not self._queue:
                    await self._wait()
                directory = self._queue.popleft()
                try:
                    await self._sweep(directory, fetches)
                except Exception as exc:  # the registry or its index copy failing: readers will say so
                    log.warning("readahead of %s/%s stopped: %s", directory.slot.version.qualified_name,
                                directory.node.name, exc)  # fmt: skip
                finally:
                    self._queued.discard(directory.inode)  # swept again after `after` more cold lookups

    async def _sweep(self, directory: VersionNode, fetches: trio.Nursery) -> None:
        self.stats.directories += 1
        self._failures_in_row = 0
        index = await self.ns.index(directory.slot)
        after = 0
        while nodes := await trio.to_thread.run_sync(index.children, directory.node.id, after, LISTING_BATCH):
            after = nodes[-1].id
            files = [(directory.slot.inode(node.id), node.entry) for node in nodes
                     if node.entry is not None and self.reader.fits_one_block(node.entry)]  # fmt: skip
            batch: list[tuple[int, Entry]] = []
            for inode, entry in await trio.to_thread.run_sync(self._uncached, files):
                if inode in self._ahead or inode in self._fetching or self.reader.has_or_is_fetching(entry):
                    continue  # not to be paid for with the job's credit
                if not self._take_credit(pending=sum(entry.size or 0 for _, entry in batch)):
                    await self._start(batch, fetches)  # what the credit allowed so far goes now
                    batch = []
                    await self._wait_for_credit()
                if self._failures_in_row >= MAX_FAILURES:
                    log.info("readahead of %s/%s stopped after %d failed fetches in a row",
                             directory.slot.version.qualified_name, directory.node.name, MAX_FAILURES)  # fmt: skip
                    return
                batch.append((inode, entry))
                if len(batch) == self.batch:
                    await self._start(batch, fetches)
                    batch = []
            await self._start(batch, fetches)

    async def _start(self, batch: list[tuple[int, Entry]], fetches: trio.Nursery) -> None:
        if batch:
            await self._jobs.acquire()
            for inode, entry in batch:
                self._fetching[inode] = entry.size or 0
                self.ahead_bytes += entry.size or 0
            fetches.start_soon(self._fetch, batch)

    def _uncached(self, files: list[tuple[int, Entry]]) -> list[tuple[int, Entry]]:
        """In a worker thread: the files the disk cache lacks (one index lookup each, no bytes read)."""
        cache = self.reader.cache
        if cache is None:
            return files
        keys = [block_key(entry, self.reader.block_size, 0) for _, entry in files]
        present = cache.present(keys)
        return [file for file, key in zip(files, keys, strict=True) if key not in present]

    def _take_credit(self, pending: int = 0) -> bool:
        """One more file, if the job's lookups allow it and the files swept ahead (and ``pending`` bytes of a batch
        not started yet) leave room for it."""
        self._expire()
        if self._credit > 0 and self.ahead_bytes + pending < self.ahead_bytes_limit:
            self._credit -= 1
            return True
        return False

    async def _wait_for_credit(self) -> None:
        while not self._take_credit():
            with trio.move_on_after(AHEAD_TTL_S / 10):  # expiry frees room without a lookup
                await self._wait()

    def _expire(self) -> None:
        deadline = trio.current_time() - AHEAD_TTL_S
        while self._ahead:
            inode, (size, when) = next(iter(self._ahead.items()))
            if when > deadline:
                return
            del self._ahead[inode]
            self.ahead_bytes -= size

    async def _wait(self) -> None:
        self._changed = trio.Event()
        await self._changed.wait()

    async def _fetch(self, batch: list[tuple[int, Entry]]) -> None:
        try:
            results = await self.reader.fetch_uncached([entry for _, entry in batch])
        except Exception as exc:  # not one file's failure (those come back as values): the readers will see
            results = [exc] * len(batch)
        finally:
            self._jobs.release()
        now = trio.current_time()
        for (inode, entry), got in zip(batch, results, strict=True):
            fetched = not isinstance(got, Exception) and got > 0
            if isinstance(got, Exception):  # the reader of the file will fetch it and report the failure
                self.stats.failures += 1
                self._failures_in_row += 1
                log.debug("readahead of %s failed: %s", entry.ref, got)
            elif fetched:
                self._failures_in_row = 0
                self.stats.files += 1
                self.stats.bytes += got
            size = self._fetching.pop(inode, None)
            if size is None:  # looked up meanwhile
                self.stats.used += fetched
            elif fetched:  # ahead of the job now
                self._ahead[inode] = (size, now)
            else:
                self.ahead_bytes -= size
                self._changed.set()  # room for a waiting sweep
