"""The FUSE request handlers (pyfuse3): a read-only tree of artifact versions.

Version subtrees never change, so their entries and attributes carry long kernel timeouts, open
files keep the page cache, and negative lookups are cached too: re-reading a tree does not reach
the daemon. The namespace above versions (new versions, moved aliases) uses ``alias_ttl``.
Entries logged with ``checksum=False`` have no size or pinned bytes and are not shown.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import pyfuse3

from ..errors import ChangedObject, RefmountError
from ..manifest import Entry
from ..reader import MAX_READAHEAD_BLOCKS, Reader
from ..registry import Node
from . import dircache
from .namespace import ROOT_INODE, Namespace, RegistryDown, VersionSlot

log = logging.getLogger(__name__)
T = TypeVar("T")

IMMUTABLE_TTL = 24 * 3600.0
IO_BLOCK = 1 << 20  # st_blksize: invites tools like cp and cat to read 1 MiB at a time
XATTRS = {
    b"user.refmount.ref": lambda e: e.ref,
    b"user.refmount.version": lambda e: e.version_id,
    b"user.refmount.digest": lambda e: e.digest,
    b"user.refmount.etag": lambda e: e.etag,
}
STATS_XATTR = b"user.refmount.stats"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def _contained(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """pyfuse3 ends the whole mount when a handler raises anything but FUSEError: an error nothing
    expected (a damaged local index, say) fails only its own request, with EIO and a traceback in the
    log. (``read`` catches its own, to name the file.)"""

    @functools.wraps(handler)
    async def run(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except RegistryDown:  # an outage: logged once by the namespace, not a traceback per request
            raise _fail(errno.EIO) from None
        except Exception:
            log.exception("EIO for a %s request %r: unexpected error", handler.__name__, args)
            raise _fail(errno.EIO) from None

    return run


def _showable(name: str) -> bool:
    """A registry may be hostile or damaged: never hand the kernel a name it could misread as a path."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        log.warning("not showing the invalid name %r from the registry", name)
        return False
    return True


@dataclass
class OpenFile:
    slot: VersionSlot
    entry: Entry
    next_offset: int = 0
    window: int = 1  # readahead blocks; doubles while the reader stays sequential
    prefetched_to: int = 0  # first block not yet asked for
    block: int = -1  # the block the last request fell in


@dataclass
class Counters:
    lookups: int = 0
    getattrs: int = 0
    readdirs: int = 0
    opens: int = 0
    reads: int = 0
    read_bytes: int = 0
    read_errors: int = 0


class Operations(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, reader: Reader, *, uid: int, gid: int):
        super().__init__()
        self.ns = namespace
        self.reader = reader
        self.uid, self.gid = uid, gid
        self.counters = Counters()
        self._files: dict[int, OpenFile] = {}
        self._next_fh = 1
        self._mount_time_ns = time.time_ns()

    # -- attributes ---------------------------------------------------------------------------------
    def _attrs(self, inode: int, mode: int, size: int, mtime_ns: int, ttl: float) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.st_mode = mode
        attr.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_size = size
        attr.st_blksize = IO_BLOCK
        attr.st_blocks = -(-size // 512)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = mtime_ns
        attr.entry_timeout = attr.attr_timeout = ttl
        return attr

    def _namespace_dir(self, inode: int) -> pyfuse3.EntryAttributes:
        return self._attrs(inode, stat.S_IFDIR | 0o555, 0, self._mount_time_ns, self.ns.alias_ttl)

    def _symlink(self, inode: int, target: str) -> pyfuse3.EntryAttributes:
        return self._attrs(inode, stat.S_IFLNK | 0o777, len(target), self._mount_time_ns, self.ns.alias_ttl)

    def _version_node(self, slot: VersionSlot, node: Node) -> pyfuse3.EntryAttributes:
        mtime = int(slot.version.created_at * 1e9)
        if node.is_dir:
            return self._attrs(slot.inode(node.id), stat.S_IFDIR | 0o555, 0, mtime, IMMUTABLE_TTL)
        assert node.entry is not None
        return self._attrs(slot.inode(node.id), stat.S_IFREG | 0o444, node.entry.size or 0, mtime, IMMUTABLE_TTL)

    @staticmethod
    def _visible(node: Node) -> bool:
        return node.is_dir or (node.entry is not None and node.entry.size is not None)

    @staticmethod
    def _negative(ttl: float) -> pyfuse3.EntryAttributes:
        """A cached "no such entry" (inode 0): the kernel stops asking for ``ttl`` seconds."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = 0
        attr.entry_timeout = ttl
        return attr

    # -- lookups -----------------------------------------------------------------------------------
    @_contained
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.counters.lookups += 1
        text = os.fsdecode(name)
        if self.ns.in_version(parent_inode):
            found = await self.ns.node(parent_inode)
            if found is None:
                raise _fail(errno.ENOENT)
            slot, parent = found
            child = await self.ns.child(slot, parent, text)
            if child is None or not self._visible(child):
                return self._negative(IMMUTABLE_TTL)
            return self._version_node(slot, child)
        path = self.ns.path_of(parent_inode)
        if path is None:
            raise _fail(errno.ENOENT)
        return await self._registry_call(self._lookup_namespace, path, text)

    async def _lookup_namespace(self, path: tuple[str, ...], name: str) -> pyfuse3.EntryAttributes:
        if len(path) == 0 and name in await self.ns.projects():
            return self._namespace_dir(self.ns.inode_of((name,)))
        if len(path) == 1 and name in await self.ns.artifacts(path[0]):
            return self._namespace_dir(self.ns.inode_of((*path, name)))
        if len(path) == 2:
            resolved = await self.ns.resolve_label(path[0], path[1], name)
            if isinstance(resolved, str):
                return self._symlink(self.ns.inode_of((*path, name)), resolved)
            if resolved is not None:
                slot = await self.ns.version_slot(resolved)
                return self._version_node(slot, slot.root)
        raise _fail(errno.ENOENT)

    @_contained
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        self.counters.getattrs += 1
        if self.ns.in_version(inode):
            found = await self.ns.node(inode)
            if found is None:
                raise _fail(errno.ENOENT)
            return self._version_node(*found)
        path = self.ns.path_of(inode)
        if path is None:
            raise _fail(errno.ENOENT)
        if len(path) == 3:
            return await self._registry_call(self._lookup_namespace, path[:2], path[2])
        return self._namespace_dir(inode)

    @_contained
    async def readlink(self, inode: int, ctx: Any = None) -> bytes:
        path = self.ns.path_of(inode)
        if path is None or len(path) != 3:
            raise _fail(errno.EINVAL)
        target = await self._registry_call(self.ns.resolve_label, *path)
        if not isinstance(target, str):
            raise _fail(errno.ENOENT)
        return os.fsencode(target)

    # -- directories ---------------------------------------------------------------------------------
    @_contained
    async def opendir(self, inode: int, ctx: Any = None) -> int:
        if not self.ns.in_version(inode):
            if self.ns.path_of(inode) is None:
                raise _fail(errno.ENOENT)
            return inode  # projects, artifacts, versions and aliases change: list them afresh each time
        dircache.mark_next_reply_cacheable()  # a version directory never changes: the kernel may keep its listing
        return inode

    @_contained
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self.counters.readdirs += 1
        if self.ns.in_version(fh):
            await self._readdir_version(fh, start_id, token)
            return
        path = self.ns.path_of(fh)
        assert path is not None
        names = await self._registry_call(self._namespace_children, path)
        for position, name in enumerate(names[start_id:], start_id + 1):
            if not _showable(name):
                continue
            attr = await self._registry_call(self._lookup_namespace, path, name)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, position):
                return

    async def _namespace_children(self, path: tuple[str, ...]) -> list[str]:
        if len(path) == 0:
            return await self.ns.projects()
        if len(path) == 1:
            return await self.ns.artifacts(path[0])
        view = await self.ns.artifact(*path)
        if view is None:
            return []
        return [f"v{i}" for i in sorted(view.versions)] + sorted(view.aliases)

    async def _readdir_version(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        found = await self.ns.node(fh)
        if found is None:
            raise _fail(errno.ENOENT)
        slot, directory = found
        mtime = int(slot.version.created_at * 1e9)
        after = start_id
        index = await self.ns.index(slot)
        while rows := index.listing(directory.id, after_id=after, limit=1000):
            for node_id, name, is_dir, size in rows:
                after = node_id
                if not _showable(name):
                    continue
                if is_dir:
                    attr = self._attrs(slot.inode(node_id), stat.S_IFDIR | 0o555, 0, mtime, IMMUTABLE_TTL)
                elif size is None:
                    continue  # a checksum=False location: nothing pinned to show
                else:
                    attr = self._attrs(slot.inode(node_id), stat.S_IFREG | 0o444, size, mtime, IMMUTABLE_TTL)
                if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, node_id):
                    return

    # -- files ----------------------------------------------------------------------------------------
    @_contained
    async def open(self, inode: int, flags: int, ctx: Any = None) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise _fail(errno.EROFS)
        found = await self.ns.node(inode)
        if found is None or found[1].entry is None:
            raise _fail(errno.EISDIR if found else errno.ENOENT)
        self.counters.opens += 1
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._files[fh] = OpenFile(found[0], found[1].entry)
        # The bytes of a pinned version never change: let the page cache keep them across opens.
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> memoryview:
        self.counters.reads += 1
        handle = self._files[fh]
        entry = handle.entry
        self._read_ahead(handle, off)
        handle.next_offset = max(handle.next_offset, off + size)
        try:
            data = await self.reader.view(entry, off, size)  # pyfuse3 takes any buffer: no copy
        except ChangedObject as exc:
            self.counters.read_errors += 1
            log.error("EIO for %s/%s: %s", handle.slot.version.qualified_name, entry.path, exc)
            raise _fail(errno.EIO) from None
        except RefmountError as exc:
            self.counters.read_errors += 1
            log.error("EIO for %s/%s (reference %s): %s", handle.slot.version.qualified_name, entry.path,
                      entry.ref, exc)  # fmt: skip
            raise _fail(errno.EIO) from None
        except Exception:  # a failure no store mapped: pyfuse3 would end the whole mount over it
            self.counters.read_errors += 1
            log.exception("EIO for %s/%s (reference %s): unexpected error", handle.slot.version.qualified_name,
                          entry.path, entry.ref)  # fmt: skip
            raise _fail(errno.EIO) from None
        self.counters.read_bytes += len(data)
        return data

    def _read_ahead(self, handle: OpenFile, off: int) -> None:
        """Sequential readers get the next blocks fetched in the background, in a window that doubles
        with every block read (up to MAX_READAHEAD_BLOCKS) and is topped up once half of it is used,
        so the store sees a few large requests rather than one per block.

        The kernel's own readahead sends several requests at once and they may arrive slightly out
        of order, so "sequential" means "near where the last request ended", not "exactly there".
        """
        block_size = self.reader.block_size
        if abs(off - handle.next_offset) > block_size:
            handle.window, handle.prefetched_to, handle.block, handle.next_offset = 1, 0, -1, off  # a seek: start over
            return
        block = off // block_size
        if block == handle.block:
            return  # decided when this block was first reached
        handle.block = block
        if handle.prefetched_to - (block + 1) <= handle.window // 2:
            first, wanted = max(block + 1, handle.prefetched_to), block + 1 + handle.window
            self.reader.prefetch(handle.entry, first, wanted - first)
            handle.prefetched_to = wanted
        handle.window = min(handle.window * 2, MAX_READAHEAD_BLOCKS)

    @_contained
    async def release(self, fh: int) -> None:
        self._files.pop(fh, None)

    # -- extended attributes ---------------------------------------------------------------------------
    @_contained
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if inode == ROOT_INODE and name == STATS_XATTR:
            return json.dumps({**asdict(self.counters), **asdict(self.reader.stats)}).encode()
        found = await self.ns.node(inode) if self.ns.in_version(inode) else None
        if found is None or found[1].entry is None or name not in XATTRS:
            raise _fail(pyfuse3.ENOATTR)
        value = XATTRS[name](found[1].entry)
        if value is None:
            raise _fail(pyfuse3.ENOATTR)
        return str(value).encode()

    @_contained
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        if inode == ROOT_INODE:
            return [STATS_XATTR]
        found = await self.ns.node(inode) if self.ns.in_version(inode) else None
        if found is None or found[1].entry is None:
            return []
        return [name for name, get in XATTRS.items() if get(found[1].entry) is not None]

    @_contained
    async def statfs(self, ctx: Any = None) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = IO_BLOCK
        data.f_namemax = 255
        return data

    # -- everything that would change something ----------------------------------------------------------
    async def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise _fail(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _read_only
    create = write = setxattr = removexattr = _read_only

    # -- helpers ----------------------------------------------------------------------------------------
    async def _registry_call(self, fn: Any, *args: Any) -> Any:
        try:
            return await fn(*args)
        except RegistryDown:
            raise _fail(errno.EIO) from None
