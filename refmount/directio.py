"""Whole-file reads and writes of blocks that bypass the page cache (O_DIRECT).

The bytes of a cached block also sit in the mounted file's page cache (the daemon opens files with
``keep_cache``), so keeping the block file's pages too would hold every byte twice, and cost a copy
through the page cache plus a writeback later. With O_DIRECT the disk reads into and writes from the
reader's own page-aligned block buffers. File systems without O_DIRECT (EINVAL) get ordinary I/O.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

from .buffers import Block, round_up


def read_into(fd: int, buffer: mmap.mmap | bytearray) -> int:
    """Read the open regular file ``fd`` from its start into ``buffer`` (directly when it is a page-aligned
    map); returns the bytes read (at most ``len(buffer)``: a longer file is cut short, which the caller sees)."""
    if isinstance(buffer, mmap.mmap):
        _try_direct(fd)  # where the file system refuses O_DIRECT, an ordinary read does the same
    return os.preadv(fd, [buffer], 0)  # whole pages are asked for: a direct read stops at end of file


def create(path: str, block: Block) -> None:
    """Write ``block`` to the new file ``path`` (which must not exist), readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # created before O_DIRECT was refused
        try:
            _write_fully(fd, block.view())
        finally:
            os.close(fd)
        return
    try:
        if block.length:
            # Direct writes take whole pages: write the page-rounded buffer, then cut the file to size.
            _write_fully(fd, memoryview(block.buffer)[: round_up(block.length)])
            os.ftruncate(fd, block.length)
    finally:
        os.close(fd)


def _write_fully(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def _try_direct(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
