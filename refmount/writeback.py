"""Fetched blocks go to the disk cache off the read path, in batches.

A reader that fetched a block replies at once; the block is written to the disk cache later by one
trio task that hands whatever has piled up to one worker thread (one thread handoff for many small
files, and their SQLite inserts share one transaction and one statement). A batch gathers blocks for
up to GATHER_S after its first one, or until BATCH_BYTES are pending: when a training epoch reads
thousands of small files a second, writing each few as they came cost a tenth of its throughput
(more commits, more handoffs); a batch of 64 small blocks costs half as much per block as one of 4.
Pending blocks are bounded in bytes: past the budget, a fetch waits for room, so memory stays bounded
when the network outruns the disk.
Each pending block keeps a hold on its buffer until it is written, and whatever claim the fetch
had on the block (another process waiting for it to land in the cache) is let go only then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .buffers import Block, BufferPool
from .cache import BlockCache

log = logging.getLogger(__name__)

GATHER_S = 0.25  # a batch is written this long after its first block at the latest...
BATCH_BYTES = 4 << 20  # ...or once this much is pending


@dataclass(frozen=True, slots=True)
class _Pending:
    key: str
    block: Block
    done: Callable[[], None]  # called once the block is written (or dropped)


class Writeback:
    def __init__(self, cache: BlockCache, buffers: BufferPool, *, budget: int, gather_s: float = GATHER_S,
                 batch_bytes: int = BATCH_BYTES) -> None:  # fmt: skip
        self.cache = cache
        self.budget = budget
        self.gather_s, self.batch_bytes = gather_s, min(batch_bytes, budget)
        self._buffers = buffers
        self._pending: list[_Pending] = []
        self._bytes = 0  # pending and being written
        self._gathered = 0  # pending
        self._work = trio.Event()
        self._full = trio.Event()  # write the batch now: enough gathered, or someone waits for it
        self._room = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    async def submit(self, key: str, block: Block, done: Callable[[], None]) -> None:
        """Queue ``block`` for the cache; waits only while the pending bytes are over budget."""
        while self._bytes >= self.budget:
            self._room = trio.Event() if self._room.is_set() else self._room
            await self._room.wait()
        self._buffers.hold(block.buffer)
        self._pending.append(_Pending(key, block, done))
        self._bytes += block.length
        self._gathered += block.length
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self._work.set()
        if self._gathered >= self.batch_bytes:
            self._full.set()

    async def run(self) -> None:
        """Write batches until cancelled (one task per reader)."""
        while True:
            await self._work.wait()
            with trio.move_on_after(self.gather_s):
                await self._full.wait()
            self._work, self._full = trio.Event(), trio.Event()
            batch, self._pending, self._gathered = self._pending, [], 0
            try:
                # Not abandoned on cancel: a write in progress finishes (a local disk is bounded),
                # so no buffer is released under the thread still writing it.
                await trio.to_thread.run_sync(self._write, batch)
            finally:
                for pending in batch:
                    self._buffers.release(pending.block.buffer)
                    self._bytes -= pending.block.length
                self._room.set()
                if not self._pending:
                    self._idle.set()

    async def drain(self) -> None:
        """Wait until every block submitted so far is written (the batch gathering is written at once)."""
        self._full.set()
        await self._idle.wait()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            self.cache.put_many([(p.key, p.block) for p in batch])
        except Exception:  # a damaged cache must not stop the reads it only speeds up
            log.exception("could not store %d block(s) in the cache; serving them anyway", len(batch))
        finally:
            for pending in batch:
                pending.done()
