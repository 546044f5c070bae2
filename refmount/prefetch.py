"""Readahead: what to fetch ahead of a sequential reader, and when to stop.

A :class:`Stream` is one reader going through one object. While its reads stay sequential, the
next blocks are fetched in the background in a window that doubles with every block read (up to
MAX_READAHEAD_BLOCKS) and is topped up once half of it is used, so the store sees a few large
requests rather than one per block. A seek starts the window over and cancels the readahead still
under way; so does closing the stream.

The daemon has no file handles to hang streams on (the kernel is asked not to send opens), so
:class:`StreamTable` keeps a few streams per inode and gives each read to the stream it continues:
two processes reading one file at different places each get their own window.
"""

from __future__ import annotations

import collections

import trio

from .manifest import Entry
from .reader import Lease, Reader

MAX_READAHEAD_BLOCKS = 8  # up to 64 MiB ahead of a sequential reader
STREAMS_PER_FILE = 4
FILES_WITH_STREAMS = 256  # the least recently read file's streams are closed past this


class Stream:
    def __init__(self, reader: Reader, entry: Entry, offset: int = 0) -> None:
        self.reader = reader
        self.entry = entry
        self.next_offset = offset  # where the last read ended
        self.window = 1  # readahead blocks
        self.prefetched_to = 0  # first block not yet asked for
        self.block = -1  # the block the last read fell in
        self._readahead: set[trio.CancelScope] = set()

    def continues(self, offset: int) -> bool:
        """Is a read at ``offset`` sequential for this stream?

        The kernel's own readahead sends several requests at once and they may arrive slightly out of
        order, so "sequential" means "near where the last read ended", not "exactly there".
        """
        return abs(offset - self.next_offset) <= self.reader.block_size

    async def read(self, offset: int, size: int) -> Lease:
        """The bytes at ``offset`` (see :meth:`Reader.lease`), after starting whatever readahead they call for."""
        self.advance(offset, size)
        return await self.reader.lease(self.entry, offset, size)

    def advance(self, offset: int, size: int) -> None:
        """Note a read of ``size`` bytes at ``offset``; fetch ahead if the stream stays sequential."""
        if not self.continues(offset):
            self.cancel()  # a seek: what was fetched ahead of the old position is no longer wanted
            self.window, self.prefetched_to, self.block, self.next_offset = 1, 0, -1, offset + size
            return  # one read at a new place is not yet a sequential reader
        self.next_offset = max(self.next_offset, offset + size)
        block = offset // self.reader.block_size
        if block == self.block:
            return  # decided when this block was first reached
        self.block = block
        if self.prefetched_to - (block + 1) <= self.window // 2:
            first, wanted = max(block + 1, self.prefetched_to), block + 1 + self.window
            self.reader.prefetch(self.entry, first, wanted - first, self._readahead)
            self.prefetched_to = wanted
        self.window = min(self.window * 2, MAX_READAHEAD_BLOCKS)

    def cancel(self) -> None:
        """Abandon the readahead under way (blocks already fetched stay cached)."""
        for scope in self._readahead:
            scope.cancel()


class StreamTable:
    """The streams of the files being read, by an id of the file (the daemon's inode numbers)."""

    def __init__(self, reader: Reader, *, per_file: int = STREAMS_PER_FILE, files: int = FILES_WITH_STREAMS):
        self.reader = reader
        self.per_file = per_file
        self.files = files
        self._streams: collections.OrderedDict[int, list[Stream]] = collections.OrderedDict()

    def stream(self, file_id: int, entry: Entry, offset: int) -> Stream:
        """The stream a read at ``offset`` continues, else a new one (closing the file's oldest past
        ``per_file``)."""
        streams = self._streams.get(file_id)
        if streams is None:
            streams = self._streams[file_id] = []
            if len(self._streams) > self.files:
                _, old = self._streams.popitem(last=False)
                for stream in old:
                    stream.cancel()
        else:
            self._streams.move_to_end(file_id)
        for i, stream in enumerate(streams):
            if stream.continues(offset):
                streams.append(streams.pop(i))  # most recently used last
                return stream
        if len(streams) >= self.per_file:
            streams.pop(0).cancel()
        streams.append(Stream(self.reader, entry, offset))
        return streams[-1]

    def close(self, file_id: int) -> None:
        """The file was closed (when the kernel says so): its readahead is no longer wanted."""
        for stream in self._streams.pop(file_id, []):
            stream.cancel()
