"""A tiny read-only pyfuse3 file system that counts what reaches it, for tests of the pyfuse3 build.

Run as ``python tests/pyfuse3_tinyfs.py MOUNTPOINT '{"enable_no_open": true, ...}'``: the JSON object sets
pyfuse3's connection attributes (``enable_no_open``, ``enable_cache_symlinks``, ``max_background``,
``congestion_threshold``). It mounts in the foreground with libfuse's ``debug`` option, so every request
that reaches the daemon is logged to stderr (``unique: N, opcode: OPEN (14), nodeid: ...``), including
the ones pyfuse3 answers in C without calling Python. What the Python handlers saw is returned as JSON
by ``getxattr(MOUNTPOINT, "user.tinyfs.stats")``; ``setxattr(MOUNTPOINT, "user.tinyfs.invalidate", b"INODE")``
calls ``pyfuse3.invalidate_inode(INODE)``; ``setxattr(MOUNTPOINT, "user.tinyfs.hold", b"1")`` makes reads of
``b.bin`` wait until the same xattr is set to ``b"0"``.

The tree (inode numbers fixed, timeouts long so that the kernel caches entries and attributes):

    /cached/   2   opendir returns FileInfo(fh=2, keep_cache=True, cache_readdir=True)
    /plain/    3   opendir returns the int 3
    /a.bin    10   300,000 bytes, a pattern of its own
    /b.bin    11   300,000 bytes, another pattern
    /link     20   symlink to a.bin

``open`` returns ``FileInfo(fh=OPEN_FH_BASE + inode, keep_cache=False)``: a read on a file opened through
``open`` carries a handle other than the inode number, and each such open drops the file's cached pages.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import sys
from collections import Counter
from typing import Any

import pyfuse3
import trio

ROOT = pyfuse3.ROOT_INODE
CACHED_DIR, PLAIN_DIR = 2, 3
FILE_A, FILE_B, LINK = 10, 11, 20
FILE_SIZE = 300_000
OPEN_FH_BASE = 1000
LINK_TARGET = b"a.bin"
STATS_XATTR = b"user.tinyfs.stats"
INVALIDATE_XATTR = b"user.tinyfs.invalidate"
HOLD_XATTR = b"user.tinyfs.hold"
TIMEOUT = 3600.0


def file_data(inode: int) -> bytes:
    pattern = hashlib.sha256(b"tinyfs-%d" % inode).digest()
    return (pattern * (FILE_SIZE // len(pattern) + 1))[:FILE_SIZE]


DIRS: dict[int, list[tuple[bytes, int]]] = {
    ROOT: [(b"cached", CACHED_DIR), (b"plain", PLAIN_DIR), (b"a.bin", FILE_A), (b"b.bin", FILE_B), (b"link", LINK)],
    CACHED_DIR: [(b"x%d" % i, FILE_A if i % 2 else FILE_B) for i in range(5)],
    PLAIN_DIR: [(b"y%d" % i, FILE_A if i % 2 else FILE_B) for i in range(5)],
}
FILES = {FILE_A: file_data(FILE_A), FILE_B: file_data(FILE_B)}


class TinyFS(pyfuse3.Operations):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__()
        for name, value in settings.items():
            if not hasattr(pyfuse3.Operations, name):
                raise SystemExit(f"this pyfuse3 has no Operations.{name}")
            setattr(self, name, value)
        self.calls: Counter[str] = Counter()
        self.read_handles: Counter[int] = Counter()
        self.readdir_handles: Counter[int] = Counter()
        self.b_released: trio.Event | None = None  # while set to an Event: reads of b.bin wait for it

    def stats(self) -> bytes:
        return json.dumps({"calls": self.calls, "read_handles": self.read_handles,
                           "readdir_handles": self.readdir_handles}).encode()  # fmt: skip

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        self.calls["getattr"] += 1
        return self._attributes(inode)

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        if inode in DIRS:
            entry.st_mode, entry.st_size, entry.st_nlink = stat.S_IFDIR | 0o555, 0, 2
        elif inode in FILES:
            entry.st_mode, entry.st_size, entry.st_nlink = stat.S_IFREG | 0o444, FILE_SIZE, 1
        elif inode == LINK:
            entry.st_mode, entry.st_size, entry.st_nlink = stat.S_IFLNK | 0o777, len(LINK_TARGET), 1
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        entry.st_ino = inode
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = 1_700_000_000 * 10**9
        entry.entry_timeout = entry.attr_timeout = TIMEOUT
        return entry

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.calls["lookup"] += 1
        for entry_name, inode in DIRS.get(parent_inode, []):
            if entry_name == name:
                return self._attributes(inode)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> Any:
        self.calls["opendir"] += 1
        if inode not in DIRS:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if inode == CACHED_DIR:
            return pyfuse3.FileInfo(fh=inode, keep_cache=True, cache_readdir=True)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self.calls["readdir"] += 1
        self.readdir_handles[fh] += 1
        for index, (name, inode) in enumerate(DIRS[fh][start_id:], start=start_id):
            if not pyfuse3.readdir_reply(token, name, self._attributes(inode), index + 1):
                break

    async def releasedir(self, fh: int) -> None:
        self.calls["releasedir"] += 1

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.calls["open"] += 1
        if inode not in FILES:
            raise pyfuse3.FUSEError(errno.EISDIR if inode in DIRS else errno.EINVAL)
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=OPEN_FH_BASE + inode, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        self.calls["read"] += 1
        self.read_handles[fh] += 1
        inode = fh - OPEN_FH_BASE if fh > OPEN_FH_BASE else fh
        if inode not in FILES:
            raise pyfuse3.FUSEError(errno.EBADF)
        if inode == FILE_B and self.b_released is not None:
            self.calls["held"] += 1
            await self.b_released.wait()
        return FILES[inode][off : off + size]

    async def flush(self, fh: int) -> None:
        self.calls["flush"] += 1

    async def release(self, fh: int) -> None:
        self.calls["release"] += 1

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        self.calls["readlink"] += 1
        if inode != LINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return LINK_TARGET

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode == ROOT and name == STATS_XATTR:
            return self.stats()
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        if inode == ROOT and name == HOLD_XATTR:
            if value == b"1":
                self.b_released = trio.Event()
            elif self.b_released is not None:
                self.b_released.set()
                self.b_released = None
            return
        if inode != ROOT or name != INVALIDATE_XATTR:
            raise pyfuse3.FUSEError(errno.EROFS)
        pyfuse3.invalidate_inode(int(value))  # drops the kernel's cached pages: listing, symlink target, data


def main() -> None:
    mountpoint, settings = sys.argv[1], json.loads(sys.argv[2])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="pyfuse3_tinyfs %(levelname)s %(message)s")
    options = set(pyfuse3.default_options) | {"fsname=pyfuse3_tinyfs", "debug"}
    pyfuse3.init(TinyFS(settings), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
