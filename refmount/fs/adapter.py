"""pyfuse3's side of the file system: each kernel request translated to a :class:`Filesystem` call.

Nothing here decides what the tree holds. Every handler goes through one error path
(:func:`_answer`): an :class:`FsError` becomes its errno (logged when it carries a message), a
registry outage is EIO (logged once, by the namespace), and anything unexpected fails only its own
request with EIO and a traceback in the log, since pyfuse3 ends the whole mount when a handler
raises anything but ``FUSEError``.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from .core import DIR, Attributes, Filesystem, FsError
from .features import Features
from .namespace import RegistryDown

log = logging.getLogger(__name__)
T = TypeVar("T")

IO_BLOCK = 1 << 20  # st_blksize: invites tools like cp and cat to read 1 MiB at a time
UNSENT_LISTINGS = 64  # listings in progress whose next entries are kept between requests


class _RecentFailures:
    """When a read fails the kernel asks again at once (its read-ahead request, then the one page the reader
    wants): the same failure of the same file a moment later is the same failure, logged once."""

    def __init__(self, window_s: float = 2.0, remembered: int = 1024):
        self.window_s = window_s
        self.remembered = remembered
        self._logged: dict[str, float] = {}  # message -> when it was last logged

    def first(self, message: str) -> bool:
        now = time.monotonic()
        if now - self._logged.get(message, -math.inf) < self.window_s:
            return False
        self._logged[message] = now
        if len(self._logged) > self.remembered:
            self._logged = {m: t for m, t in self._logged.items() if now - t < self.window_s}
        return True


def _answer(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    kind = handler.__name__

    @functools.wraps(handler)
    async def run(self: FuseAdapter, *args: Any) -> T:
        latencies = self.fs.requests[kind]
        started = time.perf_counter_ns()  # about 0.3 us with the observation below: no lock, no allocation
        try:
            return await handler(self, *args)
        except FsError as exc:
            self.fs.failed(kind, exc.errno)
            if exc.message and self.failures.first(exc.message):  # it starts with what failed: "p/ds:v0/a.bin: ..."
                log.error("%s for %s", errno.errorcode.get(exc.errno, exc.errno), exc.message)
            raise pyfuse3.FUSEError(exc.errno) from None
        except pyfuse3.FUSEError as exc:
            self.fs.failed(kind, exc.errno)
            raise
        except RegistryDown:
            self.fs.failed(kind, errno.EIO)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            self.fs.failed(kind, errno.EIO)
            log.exception("EIO for a %s request %r: unexpected error", kind, args)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            latencies.observe_ns(time.perf_counter_ns() - started)

    return run


class FuseAdapter(pyfuse3.Operations):
    """The pyfuse3 operations of a mount. Class attributes below are read by refmount's pyfuse3 build at
    init (see :mod:`refmount.fs.features`); a stock pyfuse3 ignores them."""

    enable_writeback_cache = False
    max_background = 64  # the kernel's default of 12 leaves a cold reader of many files waiting
    congestion_threshold = 48
    enable_cache_symlinks = True  # an alias link's inode is per target: its cached text is never stale
    enable_no_open = True  # versions are immutable: nothing to decide per open (the kernel keeps pages)

    def __init__(self, fs: Filesystem, features: Features, *, uid: int, gid: int):
        super().__init__()
        self.fs = fs
        self.features = features
        if fs.lineage is not None:
            self.enable_no_open = False  # lineage counts opens: the kernel must keep sending them
        self.uid, self.gid = uid, gid
        self.failures = _RecentFailures()
        self._unsent: dict[int, tuple[int, list[tuple[str, Attributes, int]]]] = {}  # listing -> (cookie, rest)

    def entry_attributes(self, attributes: Attributes) -> pyfuse3.EntryAttributes:
        out = pyfuse3.EntryAttributes()
        out.st_ino = attributes.inode
        out.entry_timeout = out.attr_timeout = attributes.ttl
        if attributes.inode == 0:
            return out  # a cached "no such entry"
        out.st_uid, out.st_gid = self.uid, self.gid
        out.st_blksize = IO_BLOCK
        self._describe(out, attributes)
        return out

    @staticmethod
    def _describe(out: pyfuse3.EntryAttributes, attributes: Attributes, previous: Attributes | None = None) -> None:
        """What differs from node to node (a listing reuses one EntryAttributes for every entry; what it shares
        with the ``previous`` one is already there)."""
        out.st_ino = attributes.inode
        out.st_mode = attributes.mode
        out.st_nlink = 2 if attributes.mode == DIR else 1
        out.st_size = attributes.size
        out.st_blocks = -(-attributes.size // 512)
        if previous is None or previous.ttl != attributes.ttl or previous.mtime_ns != attributes.mtime_ns:
            out.entry_timeout = out.attr_timeout = attributes.ttl
            out.st_atime_ns = out.st_mtime_ns = out.st_ctime_ns = attributes.mtime_ns

    # -- lookups ------------------------------------------------------------------------------------
    @_answer
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.entry_attributes(await self.fs.lookup(parent_inode, os.fsdecode(name)))

    @_answer
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self.entry_attributes(await self.fs.getattr(inode))

    @_answer
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return os.fsencode(await self.fs.readlink(inode))

    # -- directories --------------------------------------------------------------------------------
    @_answer
    async def opendir(self, inode: int, ctx: Any = None) -> int | pyfuse3.FileInfo:
        unchanging = await self.fs.opendir(inode)
        if not self.features.cached_listings:
            return inode
        return pyfuse3.FileInfo(fh=inode, keep_cache=unchanging, cache_readdir=unchanging)

    @_answer
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """A batch of entries goes to the kernel until its buffer (about 100 entries) is full; what did not fit
        waits for the next request, which continues from the last entry the kernel took."""
        pending = self._unsent.pop(fh, None)
        entries = pending[1] if pending is not None and pending[0] == start_id else await self.fs.listdir(fh, start_id)
        if not entries:
            return
        previous = entries[0][1]
        out = self.entry_attributes(previous)  # readdir_reply copies it: one object serves every entry
        for i, (name, attributes, cookie) in enumerate(entries):
            self._describe(out, attributes, previous)
            previous = attributes
            if not pyfuse3.readdir_reply(token, name.encode(errors="surrogateescape"), out, cookie):
                self._unsent[fh] = (entries[i - 1][2] if i else start_id, entries[i:])
                while len(self._unsent) > UNSENT_LISTINGS:
                    self._unsent.pop(next(iter(self._unsent)))
                return

    # -- files --------------------------------------------------------------------------------------
    @_answer
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        """With lineage, or a stock pyfuse3 (without lineage refmount's build answers ENOSYS itself). Without
        lineage the handle is the inode, as the reads of a handle-less mount carry it: one read path either way."""
        handle = await self.fs.open(inode, ctx.pid if ctx is not None else 0, ctx.uid if ctx is not None else None)
        lease = self.fs.preload(handle)
        if lease is not None:
            with lease as data:
                try:
                    pyfuse3.notify_store(inode, 0, data)
                except OSError as exc:
                    self.fs.not_preloaded(inode)
                    log.debug("the kernel did not take the bytes of inode %d: %s", inode, exc)
        return pyfuse3.FileInfo(fh=handle, keep_cache=True)  # pinned bytes never change: keep the page cache

    @_answer
    async def read(self, fh: int, off: int, size: int) -> memoryview:
        lease = await self.fs.read(fh, off, size)
        # pyfuse3 copies the returned buffer to the kernel before this task next yields, and a buffer is
        # only handed out again on this thread: the hold is let go on the event loop's next turn, after it.
        trio.lowlevel.current_trio_token().run_sync_soon(lease.release)
        return lease.view

    @_answer
    async def release(self, fh: int) -> None:
        self.fs.release(fh)

    @_answer
    async def flush(self, fh: int) -> None:
        raise FsError(errno.ENOSYS)  # nothing to flush: the kernel stops sending flushes after this answer

    @_answer
    async def releasedir(self, fh: int) -> None:
        pass

    @_answer
    async def forget(self, inode_list: Any) -> None:
        pass  # inode numbers are computed, not allocated: nothing to free

    # -- extended attributes ------------------------------------------------------------------------
    @_answer
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        return await self.fs.getxattr(inode, os.fsdecode(name))

    @_answer
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [os.fsencode(name) for name in await self.fs.listxattr(inode)]

    @_answer
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = IO_BLOCK
        data.f_namemax = 255
        return data

    # -- everything that would change something -----------------------------------------------------
    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only
