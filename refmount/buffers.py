"""Page-aligned block buffers that are reused rather than freed.

Fresh memory is costly on the read path: the first touch of every 4 KiB page is a fault and a zeroed
page, which on a cold sequential read was a third of the daemon's CPU. So the reader takes block
buffers from a pool and retires them when it drops a block, and a retired buffer is handed out again
only once nothing refers to it any more: no :class:`Block` and no memoryview of it is alive (a reply
being copied to the kernel, a cache write, a download writing it out). Python's reference count is
what tells: a buffer can never be refilled under someone still reading it.

Buffers are page-aligned, so the block cache reads and writes them with O_DIRECT as they are.
"""

from __future__ import annotations

import mmap
import sys
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
    """The first ``length`` bytes of a page-aligned ``buffer``: one block of an object."""

    buffer: mmap.mmap
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
    """Buffers of ``size`` bytes for one thread (the daemon's trio thread): taken, filled, retired.

    At most ``spare`` retired buffers that nobody uses are kept for reuse; the rest are unmapped.
    """

    def __init__(self, size: int, *, spare: int) -> None:
        self.size = round_up(size)  # what aligned_buffer makes: retire() knows pooled buffers by it
        self.spare = spare
        self.created = 0  # buffers allocated so far (a measure of how well reuse works)
        self._retired: list[mmap.mmap] = []

    def take(self, length: int) -> mmap.mmap:
        """A buffer for ``length`` bytes that nobody else refers to: a retired one when there is one, else
        a new one. Small lengths get a new buffer of their own size, outside the pool: a small file in a
        reused full-size buffer would keep all the pages that buffer ever touched resident."""
        if length <= self.size // 8:
            return aligned_buffer(length)
        for i in range(len(self._retired)):
            if self._unused(i):
                return self._retired.pop(i)
        self.created += 1
        return aligned_buffer(self.size)

    def retire(self, buffer: mmap.mmap) -> None:
        """``buffer`` is no longer needed by the caller; it is reused once every other holder let go.

        Retiring a buffer twice (say, once for a failed fetch and once when its block leaves memory)
        is harmless: it is listed once, so it can never be handed out twice.
        """
        if len(buffer) != self.size:
            return  # a small one from outside the pool: freed once its last holder lets go
        if not any(buffer is retired for retired in self._retired):
            self._retired.append(buffer)
        unused = [i for i in range(len(self._retired)) if self._unused(i)]
        for i in reversed(unused[self.spare :]):
            del self._retired[i]

    def _unused(self, i: int) -> bool:
        # The references counted are this list's and getrefcount's own argument: any Block or
        # memoryview of the buffer adds one. (CPython 3.14+ may not count the argument.)
        return sys.getrefcount(self._retired[i]) <= 2
