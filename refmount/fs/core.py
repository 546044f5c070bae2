"""The file system itself, without a kernel: what each request means for the tree of artifact versions.

Requests come in as inode numbers and names and go out as plain values (:class:`Attributes`,
names, leases of bytes) or an :class:`FsError` carrying an errno; :mod:`refmount.fs.adapter`
translates them to and from pyfuse3, and tests drive this class directly.

Version subtrees never change, so their entries and attributes carry long kernel timeouts, their
listings may be kept by the kernel, and negative lookups are cached too: re-reading a tree does
not reach the daemon. The namespace above versions (new versions, moved aliases, deleted or expired
versions' ``vN`` directories) uses ``alias_ttl``.
Entries with nothing that pins their bytes (``checksum=False`` locations) are not shown.
"""

from __future__ import annotations

import collections
import errno
import itertools
import json
import logging
import stat
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

from ..errors import RefmountError
from ..latency import Latencies
from ..manifest import DOTS, PLAIN_COMPONENT, Entry
from ..prefetch import StreamTable
from ..reader import Lease, Reader
from .lineage import LineageRecorder, Usage
from .namespace import Namespace
from .nodes import ROOT_INODE, AliasLink, FsNode, VersionNode
from .sweep import Sweeper

log = logging.getLogger(__name__)

IMMUTABLE_TTL = 24 * 3600.0
DOT_COOKIES = 2  # `.` and `..` are the cookies 1 and 2 of every listing; other entries' cookies come after
LISTING_BATCH = 1000  # entries per listing query; the kernel takes about 100 per request, the adapter keeps the rest
XATTRS = {
    "user.refmount.ref": lambda e: e.ref,
    "user.refmount.version": lambda e: e.version_id,
    "user.refmount.digest": lambda e: e.digest,
    "user.refmount.etag": lambda e: e.etag,
}
STATS_XATTR = "user.refmount.stats"


class FsError(Exception):
    """A request's answer is this errno. With a ``message``, the failure is worth a line in the log."""

    def __init__(self, code: int, message: str | None = None):
        super().__init__(message or errno.errorcode.get(code, str(code)))
        self.errno = code
        self.message = message


# What each kind of node is to stat: everything is read-only; a symlink's bits are ignored by the kernel.
DIR = stat.S_IFDIR | 0o555
FILE = stat.S_IFREG | 0o444
SYMLINK = stat.S_IFLNK | 0o777


class Attributes(NamedTuple):  # a tuple: a listing makes one per entry, a dataclass costs 1 us more each
    """What stat shows of a node, and how long the kernel may keep it (``inode`` 0: a cached "no such entry")."""

    inode: int
    mode: int  # DIR, FILE or SYMLINK
    size: int
    mtime_ns: int
    ttl: float


@dataclass
class Counters:
    lookups: int = 0
    getattrs: int = 0
    readdirs: int = 0
    opens: int = 0
    reads: int = 0
    read_bytes: int = 0
    read_errors: int = 0
    stored_files: int = 0  # small files handed to the kernel's page cache at their open (see Filesystem.preload)


PAGE_CACHE_INODES = 1_000_000  # files remembered as given whole to the kernel's page cache (about 60 MB)
HANDLE_BIT = 1 << 63  # set in handles that opens hand out (never in an inode number: see nodes.py)


@dataclass(slots=True)
class OpenFile:
    """An open the daemon answered (with lineage): the file's node, and the job's counts its reads go to."""

    node: VersionNode
    usage: Usage


class Filesystem:
    def __init__(self, namespace: Namespace, reader: Reader, lineage: LineageRecorder | None = None,
                 sweeper: Sweeper | None = None):  # fmt: skip
        self.ns = namespace
        self.reader = reader
        self.lineage = lineage  # None: opens are not counted (and, with refmount's pyfuse3, not even sent)
        self.sweeper = sweeper  # None: no readahead across files
        self._open_files: dict[int, OpenFile] = {}
        self._opens_of: collections.Counter[int] = collections.Counter()  # inode -> its opens not yet released
        self._in_page_cache: set[int] = set()  # inodes given whole to the kernel (a store, a whole read)
        self._handles = itertools.count(HANDLE_BIT + 1)
        self.streams = StreamTable(reader)
        self.counters = Counters()
        # Every kernel request answered, by kind (lookup, read, ...), and those answered with an error, by errno.
        self.requests: collections.defaultdict[str, Latencies] = collections.defaultdict(Latencies)
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self._mount_time_ns = time.time_ns()

    def failed(self, kind: str, code: int) -> None:
        """A request of ``kind`` was answered with the errno ``code``."""
        self.errors[kind, errno.errorcode.get(code, str(code))] += 1

    # -- attributes ---------------------------------------------------------------------------------
    def attributes(self, node: FsNode) -> Attributes:
        inode = self.ns.inode(node)
        if isinstance(node, VersionNode):
            entry = node.entry
            if entry is None:
                # A version's own directory (`vN`) may be deleted or expire: the kernel asks again after alias_ttl.
                ttl = self.ns.alias_ttl if node.node.id == node.slot.root_id else IMMUTABLE_TTL
                return Attributes(inode, DIR, 0, node.slot.mtime_ns, ttl)
            return Attributes(inode, FILE, entry.size or 0, node.slot.mtime_ns, IMMUTABLE_TTL)
        if isinstance(node, AliasLink):
            return Attributes(inode, SYMLINK, len(node.text), self._mount_time_ns, self.ns.alias_ttl)
        return Attributes(inode, DIR, 0, self._mount_time_ns, self.ns.alias_ttl)

    async def _node(self, inode: int) -> FsNode:
        node = await self.ns.resolve(inode)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    # -- lookups ------------------------------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: str) -> Attributes:
        """The attributes of ``name`` in a directory; a miss is a negative entry the kernel may keep
        (inside a version: a day; above: ``alias_ttl``, after which new names may appear)."""
        self.counters.lookups += 1
        parent = await self._node(parent_inode)
        if isinstance(parent, AliasLink) or (isinstance(parent, VersionNode) and not parent.is_dir):
            raise FsError(errno.ENOTDIR)
        child = await self.ns.child(parent, name)
        if child is None or not _visible(child):
            ttl = IMMUTABLE_TTL if isinstance(parent, VersionNode) else self.ns.alias_ttl
            return Attributes(0, FILE, 0, 0, ttl)
        if isinstance(child, VersionNode) and child.entry is not None:
            # A file is looked up just before it is opened and read: a small one is fetched now, so that
            # its read (two more round trips through the kernel away) finds it arriving or arrived.
            cold = self.reader.fetch_small_file(child.entry)
            if self.sweeper is not None:
                self.sweeper.looked_up(parent, child, cold)  # type: ignore[arg-type]  # a VersionNode's parent is one
        return self.attributes(child)

    async def getattr(self, inode: int) -> Attributes:
        self.counters.getattrs += 1
        return self.attributes(await self._node(inode))

    async def readlink(self, inode: int) -> str:
        node = await self._node(inode)
        if not isinstance(node, AliasLink):
            raise FsError(errno.EINVAL)
        return node.text

    # -- directories --------------------------------------------------------------------------------
    async def opendir(self, inode: int) -> bool:
        """Check ``inode`` is a directory; True if its listing never changes (the kernel may keep it)."""
        node = await self._node(inode)
        if isinstance(node, AliasLink) or (isinstance(node, VersionNode) and not node.is_dir):
            raise FsError(errno.ENOTDIR)
        return isinstance(node, VersionNode)  # a version directory; those above change

    async def listdir(self, inode: int, after: int) -> list[tuple[str, Attributes, int]]:
        """(name, attributes, cookie) of the next entries past the cookie ``after`` (0: from the start), a
        batch of them, ``.`` and ``..`` first; an empty list at the end."""
        self.counters.readdirs += 1
        node = await self._node(inode)
        if isinstance(node, AliasLink) or (isinstance(node, VersionNode) and not node.is_dir):
            raise FsError(errno.ENOTDIR)
        dots = await self._dots(node, after) if after < DOT_COOKIES else []
        skip = max(after - DOT_COOKIES, 0)  # what comes after the dots is counted from 0 again
        if isinstance(node, VersionNode):
            return dots + await self._list_version_dir(node, skip)
        children = await self.ns.children(node)
        return dots + [(name, self.attributes(child), DOT_COOKIES + position)
                       for position, (name, child) in enumerate(children[skip:], skip + 1)]  # fmt: skip

    async def _dots(self, directory: FsNode, after: int) -> list[tuple[str, Attributes, int]]:
        """``.`` and ``..`` (cookies 1 and 2), those past ``after``: tools such as ``ls -a`` expect them."""
        here, up = self.attributes(directory), self.attributes(await self.ns.parent(directory))
        return [(".", here, 1), ("..", up, 2)][after:]

    async def _list_version_dir(self, directory: VersionNode, after: int) -> list[tuple[str, Attributes, int]]:
        """The next batch of a version directory's entries past the node id ``after``; their cookies are
        their node ids past the dots' (ids only grow, so a cookie stays valid whatever is listed)."""
        slot, mtime, invalid = directory.slot, directory.slot.mtime_ns, self.ns.invalid_path_name
        plain = PLAIN_COMPONENT.fullmatch  # valid without further checks (all but odd names)
        new = tuple.__new__  # Attributes without its Python-level constructor: one per entry listed
        shift = DOT_COOKIES
        index = await self.ns.index(slot)
        while rows := index.listing(directory.node.id, after_id=after, limit=LISTING_BATCH):
            base = slot.inode(0)
            batch = [(name, new(Attributes, (base | node_id, DIR if is_dir else FILE, size or 0, mtime, IMMUTABLE_TTL)),
                      node_id + shift)
                     for node_id, name, is_dir, size in rows
                     if (is_dir or size is not None)  # size None: not shown (see _visible)
                     and ((plain(name) and name not in DOTS) or not invalid(name))]  # fmt: skip
            if batch:
                return batch
            after = rows[-1][0]  # a whole batch of entries not shown: look further
        return []

    # -- files --------------------------------------------------------------------------------------
    async def open(self, inode: int, pid: int = 0, uid: int | None = None) -> int:
        """Check ``inode`` is a file, and count the open for lineage (``pid``: the opener); returns the handle its
        reads and release will name: the inode itself without lineage (the kernel may not ask at all then)."""
        self.counters.opens += 1
        node, _ = await self._file(inode)
        handle = inode
        if self.lineage is not None and pid:
            usage = await self.lineage.opened(node.slot.version.qualified_name, pid, uid)
            handle = next(self._handles)
            self._open_files[handle] = OpenFile(node, usage)
        self._opens_of[inode] += 1
        return handle

    def preload(self, handle: int) -> Lease | None:
        """The whole bytes of a small file being opened (``handle`` from :meth:`open`, not yet answered), for the
        caller to store in the kernel's page cache before answering: its reads then never reach the daemon.
        Only when its block is in memory, the kernel was not handed it already, and no other open of it is
        alive: the kernel stores pages under their page locks, which a read of the same file in flight holds
        until the daemon answers it (the daemon would wait for itself). The bytes count as served to the open."""
        opened = self._open_files.get(handle)
        if opened is None:
            return None
        inode = opened.node.inode
        if inode in self._in_page_cache or self._opens_of[inode] != 1:
            return None
        lease = self.reader.small_file_in_memory(opened.node.entry)  # type: ignore[arg-type]
        if lease is None:
            return None
        self._remember_in_page_cache(inode)
        self.counters.stored_files += 1
        self.counters.read_bytes += len(lease.view)
        opened.usage.bytes += len(lease.view)
        return lease

    def _remember_in_page_cache(self, inode: int) -> None:
        if len(self._in_page_cache) >= PAGE_CACHE_INODES:
            self._in_page_cache.clear()  # at worst a file is stored again
        self._in_page_cache.add(inode)

    def not_preloaded(self, inode: int) -> None:
        """The kernel refused the bytes :meth:`preload` gave for ``inode``: its reads will come."""
        self._in_page_cache.discard(inode)

    async def read(self, handle: int, offset: int, size: int) -> Lease:
        """The bytes at ``offset``, as a lease the caller releases once they are sent."""
        self.counters.reads += 1
        opened = self._open_files.get(handle) if handle & HANDLE_BIT else None
        if opened is not None:  # the open looked the node up already
            node, entry, inode = opened.node, opened.node.entry, opened.node.inode
            assert entry is not None
        else:
            node, entry = await self._file(handle)
            inode = handle
        try:
            lease = await self.streams.stream(inode, entry, offset).read(offset, size)
        except RefmountError as exc:
            self.counters.read_errors += 1
            where, message = f"{node.slot.version.qualified_name}/{entry.path}", str(exc)
            raise FsError(errno.EIO, f"{where}: {message}" if entry.ref in message else
                          f"{where} (reference {entry.ref}): {message}") from None  # fmt: skip
        self.counters.read_bytes += len(lease.view)
        # The kernel asks, so it lacks the pages; once answered it holds them if the answer was the whole file.
        if offset == 0 and len(lease.view) == entry.size:
            self._remember_in_page_cache(inode)
        else:
            self._in_page_cache.discard(inode)
        if opened is not None:
            opened.usage.bytes += len(lease.view)
        return lease

    def release(self, handle: int) -> None:
        """A file was closed (when the kernel says so): stop reading ahead."""
        if handle & HANDLE_BIT:
            opened = self._open_files.pop(handle, None)
            if opened is None:
                return
            LineageRecorder.closed(opened.usage)
            handle = opened.node.inode
        if self._opens_of[handle] <= 1:
            self._opens_of.pop(handle, None)
        else:
            self._opens_of[handle] -= 1
        self.streams.close(handle)

    async def _file(self, inode: int) -> tuple[VersionNode, Entry]:
        node = await self._node(inode)
        if not isinstance(node, VersionNode):
            raise FsError(errno.EISDIR if not isinstance(node, AliasLink) else errno.EINVAL)
        if node.entry is None:
            raise FsError(errno.EISDIR)
        return node, node.entry

    # -- extended attributes ------------------------------------------------------------------------
    async def getxattr(self, inode: int, name: str) -> bytes:
        if inode == ROOT_INODE and name == STATS_XATTR:
            requests = {kind: latencies.count for kind, latencies in self.requests.items()}
            stats = {**asdict(self.counters), **asdict(self.reader.stats), "requests": requests}
            if self.lineage is not None:
                stats["lineage"] = {**asdict(self.lineage.stats), "pending": self.lineage.pending}
            if self.sweeper is not None:
                stats["dir_readahead"] = {**asdict(self.sweeper.stats), "ahead_bytes": self.sweeper.ahead_bytes}
            return json.dumps(stats).encode()
        entry = await self._entry_or_none(inode)
        value = XATTRS[name](entry) if entry is not None and name in XATTRS else None
        if value is None:
            raise FsError(errno.ENODATA)
        return str(value).encode()

    async def listxattr(self, inode: int) -> list[str]:
        if inode == ROOT_INODE:
            return [STATS_XATTR]
        entry = await self._entry_or_none(inode)
        return [] if entry is None else [name for name, get in XATTRS.items() if get(entry) is not None]

    async def _entry_or_none(self, inode: int) -> Entry | None:
        node = await self._node(inode)
        return node.entry if isinstance(node, VersionNode) else None


def _visible(node: FsNode) -> bool:
    """Files without a size or with nothing that pins their bytes (``checksum=False`` locations, W&B's
    entries of HTTP files without an ETag) are not shown: the mount serves logged bytes or nothing."""
    if not isinstance(node, VersionNode) or node.is_dir:
        return True
    return node.entry is not None and node.entry.size is not None and node.entry.pinned
