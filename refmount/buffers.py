"""Page-aligned block buffers, reused by explicit ownership.

Fresh memory is costly on the read path: the first touch of every 4 KiB page is a fault and a zeroed
page, which on a cold sequential read was a third of the daemon's CPU. So the reader takes block
buffers from a pool and gives them back, and a buffer is handed out again only once every holder has
let go of it. The holders are explicit: whoever takes a buffer holds it, and each other party that
keeps the bytes (the in-memory block cache, a reply on its way to the kernel, a cache write, a
download writing them out) adds a hold and releases it when done. Nothing is inferred from Python's
reference counts, so no interpreter detail can let a buffer be refilled under a reader.

Buffers are page-aligned, so the block cache reads and writes them with O_DIRECT as they are.
"""

from __future__ import annotations

import mmap
import threading
from dataclasses import dataclass

PAGE = mmap.PAGESIZE
HUGE_PAGE = 2 << 20


def aligned_buffer(size: int) -> mmap.mmap:
    """A zero-filled, page-aligned buffer of ``size`` bytes rounded up to whole pages."""
    # Private: Python's default for anonymous maps is shared memory, which costs a tmpfs file per buffer.
    buffer = mmap.mmap(-1, round_up(max(size, 1)), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE:
        buffer.madvise(mmap.MADV_HUGEPAGE)  # a few 2 MiB faults instead of hundreds of 4 KiB ones
    return buffer


def round_up(size: int) -> int:
    return -(-size // PAGE) * PAGE


@dataclass(frozen=True, slots=True)
class Block:
    """The first ``length`` bytes of ``buffer``: one block of an object. Blocks the cache writes with O_DIRECT
    are in page-aligned buffers; small ones (stored inside the cache's index) may be plain memory."""

    buffer: mmap.mmap | bytearray | bytes
    length: int

    def view(self, start: int = 0, stop: int | None = None) -> memoryview:
        """Read-only bytes ``start:stop`` (clipped to the block), without a copy."""
        end = self.length if stop is None else min(stop, self.length)
        return memoryview(self.buffer)[start:end].toreadonly()

    @classmethod
    def of(cls, data: bytes | memoryview) -> Block:
        """A block holding a copy of ``data`` in a buffer of its own (outside any pool)."""
        buffer = aligned_buffer(len(data))
        buffer[: len(data)] = data
        return cls(buffer, len(data))


class BufferPool:
    """Buffers of ``size`` bytes: taken (with one hold), held and released; reused once no hold is left.

    At most ``spare`` unheld buffers are kept for reuse; the rest are unmapped. Small lengths get a
    buffer of their own size outside the pool (a small file in a reused full-size buffer would keep
    every page that buffer ever touched resident); such buffers are never reused, so holding them is
    a no-op. Holds are counted under a lock: a cache writer releases its hold from a worker thread.
    """

    def __init__(self, size: int, *, spare: int) -> None:
        self.size = round_up(size)
        self.spare = spare
        self.created = 0  # buffers allocated so far (a measure of how well reuse works)
        self._spares: list[mmap.mmap] = []
        self._holds: dict[int, tuple[mmap.mmap, int]] = {}  # id(buffer) -> (buffer, holds)
        self._mine: set[int] = set()  # ids of the pool's buffers, held or spare
        self._lock = threading.Lock()

    def take(self, length: int, *, aligned: bool = True) -> mmap.mmap | bytearray:
        """A buffer for ``length`` bytes that nobody holds, now held once by the caller. A small one that need
        not be page-aligned (no O_DIRECT write will take it) is plain memory: an anonymous map of its own
        costs a map, a fault per page and an unmap (about 45 us for 64 KiB)."""
        if length <= self.size // 8:
            return aligned_buffer(length) if aligned else bytearray(length)
        with self._lock:
            if self._spares:
                buffer = self._spares.pop()
            else:
                self.created += 1
                buffer = aligned_buffer(self.size)
                self._mine.add(id(buffer))
            self._holds[id(buffer)] = (buffer, 1)
        return buffer

    def hold(self, buffer: mmap.mmap | bytearray | bytes) -> None:
        """One more party keeps ``buffer``'s bytes; it must :meth:`release` it when done."""
        with self._lock:
            held = self._holds.get(id(buffer))
            if held is None:
                if self._pooled(buffer):
                    raise RuntimeError("hold of a pool buffer that nobody holds (it may already be reused)")
                return
            self._holds[id(buffer)] = (buffer, held[1] + 1)

    def release(self, buffer: mmap.mmap | bytearray | bytes) -> None:
        """Let go of one hold; the last one puts ``buffer`` back among the spares (or unmaps it)."""
        with self._lock:
            held = self._holds.get(id(buffer))
            if held is None:
                if self._pooled(buffer):
                    raise RuntimeError("release of a pool buffer that nobody holds (released twice?)")
                return
            if held[1] > 1:
                self._holds[id(buffer)] = (buffer, held[1] - 1)
                return
            del self._holds[id(buffer)]
            if len(self._spares) < self.spare:
                self._spares.append(buffer)
            else:
                self._mine.discard(id(buffer))  # past the spares: unmapped once the last view of it is gone

    def holds(self, buffer: mmap.mmap | bytearray | bytes) -> int:
        """How many holds ``buffer`` has (0: a spare, or a small buffer outside the pool)."""
        with self._lock:
            held = self._holds.get(id(buffer))
            return 0 if held is None else held[1]

    def _pooled(self, buffer: mmap.mmap | bytearray | bytes) -> bool:
        return id(buffer) in self._mine
