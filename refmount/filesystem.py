"""An fsspec filesystem (protocol ``refmount``) over the registry: the mount's tree and pinned reads, no FUSE.

Paths are the mount's: ``PROJECT/ARTIFACT/VERSION-OR-ALIAS/PATH``, and ``PROJECT/ARTIFACT:VERSION/PATH`` as
``show`` and ``download`` spell it. Reads go through the same :class:`~refmount.reader.Reader`, pins and disk
cache (same directory, same block keys) as the mount, so a node can mix mounts and fsspec readers and fetch
each block once. The reader runs on trio in a thread of its own (the portal); fsspec calls it synchronously.
"""

from __future__ import annotations

import atexit
import errno
import os
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trio
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from . import config
from .cache import BlockCache
from .download import already_correct, write_entry
from .errors import NotFound, RefmountError, about
from .manifest import Entry, path_component_problem
from .names import name_problem, version_index
from .reader import Reader, open_reader
from .registry import Registry, open_registry
from .registry.base import ManifestIndex, VersionInfo

T = TypeVar("T")
_PAGE = 1000


class _Portal:
    """A thread running trio with one open :class:`Reader`; other threads call into it and wait."""

    def __init__(self, cache: BlockCache | None):
        self.pid = os.getpid()
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._reader: Reader | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._serve, cache), name="refmount-reader",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    async def _serve(self, cache: BlockCache | None) -> None:
        try:
            async with open_reader(cache) as reader:
                self._reader, self._token, self._stop = reader, trio.lowlevel.current_trio_token(), trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # handed to the thread that waits for the portal
            self._failure = exc
            self._ready.set()

    def call(self, fn: Callable[[Reader], Coroutine[Any, Any, T]]) -> T:
        assert self._reader is not None and self._token is not None
        reader = self._reader
        return trio.from_thread.run(lambda: fn(reader), trio_token=self._token)

    def close(self) -> None:
        """Stop the reader (blocks it fetched are written to the cache first)."""
        if self._stop is not None and self._token is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join()


@dataclass
class _Located:
    """What a path names: ``kind`` is 'root', 'project', 'artifact', 'version' (a vN or an alias), 'dir' or 'file'."""

    kind: str
    name: str
    version: VersionInfo | None = None
    index: ManifestIndex | None = None
    node_id: int | None = None
    entry: Entry | None = None
    alias_of: str | None = None


class RefmountFileSystem(AbstractFileSystem):
    """Read-only access to every artifact version of a registry.

    ``registry``: its URL (default: the configured one); ``cache_dir``/``cache_size``: the block cache (default:
    the configured one, which a mount on the same node shares); ``cache=False`` reads without a disk cache.
    """

    protocol = "refmount"
    root_marker = ""

    def __init__(self, registry: str | None = None, *, cache_dir: str | None = None,
                 cache_size: str | int | None = None, cache: bool = True, **kwargs: Any):  # fmt: skip
        super().__init__(**kwargs)
        flags = {"registry": registry, "cache_dir": cache_dir, "cache_size": cache_size}
        self._settings = config.load({k: v for k, v in flags.items() if v is not None})
        self._use_cache = cache
        self._lock = threading.Lock()
        self._pid = -1  # what follows belongs to one process: a forked DataLoader worker makes its own
        self._registry: Registry | None = None
        self._cache: BlockCache | None = None
        self._portal: _Portal | None = None
        self._indexes: dict[str, ManifestIndex] = {}

    # -- per-process state ----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        self._own_state()
        assert self._registry is not None
        return self._registry

    def _reads(self) -> _Portal:
        self._own_state()
        with self._lock:
            if self._portal is None:
                self._cache = (
                    BlockCache(self._settings.cache_dir, self._settings.cache_size) if self._use_cache else None
                )
                self._portal = _Portal(self._cache)
                atexit.register(self.close)  # the blocks read so far go to the cache before the process ends
            return self._portal

    def _own_state(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # After a fork, the parent's connections and reader thread are not ours: start afresh, untouched.
            self._registry, self._cache, self._portal, self._indexes = None, None, None, {}
            index_dir = Path(self._settings.cache_dir) / "manifests"  # where the mount keeps its copies too
            self._registry = open_registry(self._settings.registry, index_dir=index_dir)
            self._pid = os.getpid()

    def _index(self, manifest_id: str) -> ManifestIndex:
        """A stored manifest's index, opened once per process (a stored manifest never changes)."""
        index = self._indexes.get(manifest_id)
        if index is None:
            index = self._indexes[manifest_id] = self.registry.manifest_index(manifest_id)
        return index

    def close(self) -> None:
        """Finish the reader's cache writes and release connections (also done at exit)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            if self._portal is not None:
                self._portal.close()
            if self._cache is not None:
                self._cache.close()
            if self._registry is not None:
                self._registry.close()
            self._pid, self._registry, self._cache, self._portal = -1, None, None, None

    # -- paths ----------------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = super()._strip_protocol(path)
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and ":" in parts[1]:  # PROJECT/ARTIFACT:VERSION/... as show and download spell it
            artifact, _, label = parts[1].partition(":")
            parts[1:2] = [artifact, label]
        return "/".join(p for p in parts if p)

    def _locate(self, path: str) -> _Located:
        stripped = self._strip_protocol(path)
        parts = stripped.split("/") if stripped else []
        registry = self.registry
        if not parts:
            return _Located("root", "")
        project = parts[0]
        if name_problem(project):
            raise _missing(path)
        if len(parts) == 1:
            if project not in registry.projects():
                raise _missing(path)
            return _Located("project", project)
        artifact = parts[1]
        if name_problem(artifact):
            raise _missing(path)
        if len(parts) == 2:
            if artifact not in {a.name for a in registry.artifacts(project)}:
                raise _missing(path)
            return _Located("artifact", f"{project}/{artifact}")
        label = parts[2]
        try:  # deeper paths: resolve alone says whether project and artifact exist (no listing of either)
            version = registry.resolve(project, artifact, label)
        except NotFound:
            raise _missing(path) from None
        alias_of = None if version_index(label) is not None else f"v{version.index}"
        index = self._index(version.manifest_id)
        node_id = index.root_id
        for depth, name in enumerate(parts[3:], start=4):
            node = None if path_component_problem(name) else index.child(node_id, name)
            if node is None or (depth < len(parts) and not node.is_dir):
                raise _missing(path)
            node_id = node.id
            if not node.is_dir:
                if node.entry is None or not node.entry.pinned or node.entry.size is None:
                    raise FileNotFoundError(errno.ENOENT, "not served: nothing pins its bytes", path)
                return _Located("file", "/".join(parts), version=version, index=index, node_id=node_id,
                                entry=node.entry)  # fmt: skip
        kind = "dir" if len(parts) > 3 else "version"
        return _Located(kind, "/".join(parts), version=version, index=index, node_id=node_id, alias_of=alias_of)

    # -- metadata -------------------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        where = self._locate(path)
        if where.kind == "file":
            return [self._info(where)] if detail else [where.name]
        prefix = f"{where.name}/" if where.name else ""
        if where.index is not None:  # inside a version
            out = list(self._version_listing(where, prefix))
        else:
            out = [_directory(prefix + name) for name in self._names(where)]
        return out if detail else [item["name"] for item in out]

    def _names(self, where: _Located) -> list[str]:
        registry = self.registry
        if where.kind == "root":
            return [p for p in registry.projects() if not name_problem(p)]
        if where.kind == "project":
            return [a.name for a in registry.artifacts(where.name) if not name_problem(a.name)]
        project, artifact = where.name.split("/")
        labels = [f"v{v.index}" for v in registry.versions(project, artifact)]
        return labels + sorted(a for a in registry.aliases(project, artifact) if not name_problem(a))

    def _version_listing(self, where: _Located, prefix: str) -> Iterator[dict[str, Any]]:
        assert where.index is not None and where.node_id is not None
        after = 0
        while page := where.index.children(where.node_id, after, _PAGE):
            for node in page:
                if path_component_problem(node.name):
                    continue
                if node.is_dir:
                    yield _directory(prefix + node.name)
                elif node.entry is not None and node.entry.pinned and node.entry.size is not None:
                    yield self._info(_Located("file", prefix + node.name, version=where.version, entry=node.entry))
            after = page[-1].id

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        where = self._locate(path)
        if where.kind == "file":
            return self._info(where)
        info = _directory(where.name)
        if where.kind == "version" and where.version is not None:
            info.update(version=where.version.qualified_name, digest=where.version.digest, alias_of=where.alias_of)
        return info

    @staticmethod
    def _info(where: _Located) -> dict[str, Any]:
        entry, version = where.entry, where.version
        assert entry is not None and version is not None
        return {"name": where.name, "size": entry.size, "type": "file", "ref": entry.ref, "digest": entry.digest,
                "version_id": entry.version_id, "etag": entry.etag, "version": version.qualified_name}  # fmt: skip

    # -- reads ----------------------------------------------------------------------------------------
    def _entry(self, path: str) -> Entry:
        where = self._locate(path)
        if where.kind != "file" or where.entry is None:
            raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", path)
        return where.entry

    def read_range(self, entry: Entry, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of ``entry``, pinned, through the cache."""
        assert entry.size is not None
        start, end = max(0, start), min(end, entry.size)
        if end <= start:
            return b""
        try:
            return self._reads().call(lambda reader: reader.read(entry, start, end - start))
        except RefmountError as exc:
            raise OSError(errno.EIO, about(entry.path, exc)) from None

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        entry = self._entry(path)
        assert entry.size is not None
        return self.read_range(entry, *_bounds(entry.size, start, end))

    def cat_ranges(self, paths: list[str], starts: list[int] | int, ends: list[int] | int, max_gap: Any = None,
                   on_error: str = "return", **kwargs: Any) -> list[Any]:  # fmt: skip
        """All the ranges read at once (the reader fetches them concurrently)."""
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        jobs: list[tuple[Entry, int, int] | Exception] = []
        for path, start, end in zip(paths, starts, ends, strict=True):
            try:
                entry = self._entry(path)
                assert entry.size is not None
                jobs.append((entry, *_bounds(entry.size, start, end)))
            except (OSError, RefmountError) as exc:
                if on_error == "raise":
                    raise
                jobs.append(exc)

        async def all_ranges(reader: Reader) -> list[Any]:
            results: list[Any] = [None] * len(jobs)

            async def one(i: int, entry: Entry, start: int, end: int) -> None:
                try:
                    results[i] = await reader.read(entry, start, max(0, end - start))
                except RefmountError as exc:
                    results[i] = OSError(errno.EIO, about(entry.path, exc))

            async with trio.open_nursery() as nursery:
                for i, job in enumerate(jobs):
                    if isinstance(job, Exception):
                        results[i] = job
                    else:
                        nursery.start_soon(one, i, *job)
            return results

        results = self._reads().call(all_ranges)
        if on_error == "raise":
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results

    def get_file(self, rpath: str, lpath: str, callback: Any = None, outfile: Any = None, **kwargs: Any) -> None:
        """Download one file as ``refmount download`` does: kept if ``lpath`` already holds the logged bytes,
        else written through a partial file checked against the logged size and MD5."""
        if outfile is not None:  # fsspec's streaming form: plain reads
            super().get_file(rpath, lpath, callback=callback, outfile=outfile, **kwargs)
            return
        if self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        entry, target = self._entry(rpath), Path(lpath)
        if already_correct(entry, target):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._reads().call(lambda reader: write_entry(entry, target, reader))
        except RefmountError as exc:
            raise OSError(errno.EIO, about(entry.path, exc)) from None

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> RefmountFile:  # fmt: skip
        if mode != "rb":
            raise PermissionError(errno.EROFS, "refmount is read-only", path)
        return RefmountFile(self, path, self._entry(path), block_size=block_size, cache_options=cache_options)

    # -- writes: none ---------------------------------------------------------------------------------
    def _read_only(self, path: Any, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, "refmount is read-only", str(path))

    mkdir = makedirs = rmdir = _rm = rm = rm_file = touch = pipe_file = put_file = cp_file = mv = _read_only


class RefmountFile(AbstractBufferedFile):
    """A file of a version, read in ranges through the pinned reader; fsspec's read-ahead cache on top."""

    def __init__(self, fs: RefmountFileSystem, path: str, entry: Entry, **kwargs: Any):
        self.entry = entry
        kwargs.setdefault("cache_type", "readahead")
        super().__init__(fs, path, mode="rb", size=entry.size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs = self.fs
        assert isinstance(fs, RefmountFileSystem)
        return fs.read_range(self.entry, start, end)


def _bounds(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """fsspec's range convention: None is an end of the file, a negative number counts from the end."""
    start = 0 if start is None else (size + start if start < 0 else start)
    end = size if end is None else (size + end if end < 0 else end)
    return max(0, start), min(size, end)


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def _missing(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such project, artifact, version or file", path)
