"""Whole-file reads and writes that bypass the page cache (O_DIRECT), for cache blocks.

The bytes of a cached block also sit in the mounted file's page cache (the daemon opens files with
``keep_cache``), so keeping the block file's pages too would hold every byte twice, and costs a copy
through the page cache plus a writeback later. With O_DIRECT the disk reads into and writes from our
own page-aligned buffers. File systems without O_DIRECT (EINVAL) get ordinary I/O.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

ALIGN = mmap.PAGESIZE  # O_DIRECT wants aligned buffers, offsets and lengths; a page satisfies every device
HUGE_PAGE = 2 << 20


def aligned_buffer(size: int) -> mmap.mmap:
    """A zero-filled, page-aligned buffer of at least ``size`` bytes (rounded up to whole pages)."""
    # Private: Python's default for anonymous maps is shared memory, which costs a tmpfs file per buffer.
    buffer = mmap.mmap(-1, max(ALIGN, -(-size // ALIGN) * ALIGN), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if size >= HUGE_PAGE:
        buffer.madvise(mmap.MADV_HUGEPAGE)  # a few 2 MiB faults instead of thousands of 4 KiB ones
    return buffer


def read_all(fd: int) -> memoryview:
    """The whole content of the open regular file ``fd`` (switched to O_DIRECT when possible)."""
    size = os.fstat(fd).st_size
    if not _set_direct(fd):
        return memoryview(os.pread(fd, size, 0))
    buffer = aligned_buffer(size)
    got = os.preadv(fd, [buffer], 0)  # asks for whole pages: a direct read stops at the end of file
    return memoryview(buffer)[:got].toreadonly()


def create(path: str, data: bytes | memoryview) -> None:
    """Write ``data`` to the new file ``path`` (which must not exist), readable by its owner only."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # created before O_DIRECT was refused
        try:
            _write_fully(fd, memoryview(data))
        finally:
            os.close(fd)
        return
    try:
        size = len(data)
        if size:
            buffer = aligned_buffer(size)
            buffer[:size] = data
            _write_fully(fd, memoryview(buffer))  # whole pages: the padding is cut off below
            os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _write_fully(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _set_direct(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        return False
    return True
