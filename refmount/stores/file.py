"""``file://`` references: local disks and NFS mounts.

A file's version is its MD5 (base64, W&B's digest for local references). Hashing every byte on
each read would be ruinous, so the logged size and mtime are a fast check and the MD5 is only
recomputed when the mtime moved.

Except when a mount lets other users read through it (``allow_other``) and the file is one they
could not read themselves: anyone can learn a file's size and mtime with ``stat``, so a forged
manifest entry would otherwise hand them its bytes. Such files are served only once their MD5 has
been checked (once per change of the file: the check is remembered by inode, size, mtime and ctime).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidInput, NotFound, StoreError
from ..manifest import MTIME_NS, Entry, b64_md5, join_path, wandb_location_digest
from ..uri import RefURI, file_ref, parse_ref
from .base import DEFAULT_MAX_OBJECTS, RetryPolicy, Store, changed, limit

log = logging.getLogger(__name__)

_HASH_CHUNK = 4 << 20
_HASH_THREADS = min(8, (os.cpu_count() or 1) * 2)  # hashlib releases the GIL on large updates


def file_uri(path: str | Path) -> str:
    return file_ref(str(path))


class FileStore(Store):
    schemes = ("file",)

    def __init__(self, *, policy: RetryPolicy | None = None) -> None:
        super().__init__(policy=policy)  # a local file system: nothing to retry
        # (path, dev, inode, size, mtime_ns, ctime_ns) -> b64 MD5: a file changed in any way is hashed again
        self._verified: dict[tuple[str, int, int, int, int, int], str] = {}
        self._lock = threading.Lock()
        self._serves_other_users = False

    def serve_other_users(self) -> None:
        """For a mount with allow_other: from now on, files that not everyone may read are served only after
        an MD5 check."""
        self._serves_other_users = True

    def check_ref(self, ref: RefURI) -> None:
        _local_path(ref)
        if ref.query:  # file_uri() writes a '?' in a file name as %3F: a bare one starts a query
            raise InvalidInput(
                f"{ref.raw}: file:// references take no query parameters (write '?' in a file name as %3F)"
            )

    def scan(
        self, ref: RefURI, *, name: str | None = None, checksum: bool = True, max_objects: int = DEFAULT_MAX_OBJECTS
    ) -> Iterator[Entry]:
        self.check_ref(ref)
        root = _local_path(ref)
        try:
            st = root.stat()
        except FileNotFoundError:
            raise NotFound(f"{ref.raw}: no such file or directory") from None
        except OSError as exc:
            raise InvalidInput(f"{ref.raw}: {exc.strerror}") from exc
        if stat.S_ISREG(st.st_mode):
            files: Iterable[tuple[str, Path]] = [(name or root.name, root)]
        elif stat.S_ISDIR(st.st_mode):
            files = ((join_path(name, rel), path) for rel, path in _walk(root))
        else:
            raise InvalidInput(f"{ref.raw} is neither a regular file nor a directory")
        if not checksum:  # W&B's: an entry per file, locations that pin nothing (see Entry.content_md5)
            return map(_location_entry_for, limit(files, max_objects, ref))
        return _bounded_map(_entry_for, limit(files, max_objects, ref), _HASH_THREADS * 4)

    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        return self._opened(entry, lambda fd: os.pread(fd, length, offset))

    def read_into(self, entry: Entry, offset: int, targets: Sequence[memoryview]) -> int:
        return self._opened(entry, lambda fd: _read_fully(fd, targets, offset))

    def _opened(self, entry: Entry, use: Callable[[int], T]) -> T:
        """``use`` the file opened and checked against the logged version: every check is made on the open
        file itself, so a path swapped meanwhile (a symlink flipped between two files) cannot slip one
        file's bytes past another's check. O_NONBLOCK: a FIFO put in a file's place must not hang us."""
        path = _local_path(parse_ref(entry.ref))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise changed(entry, "the file was deleted") from None
        except OSError as exc:  # permissions, a broken NFS mount: one line naming the file
            raise StoreError(f"{entry.path}: cannot open {path}: {exc.strerror or exc}") from None
        try:
            if entry.is_snapshot:
                self._verify(entry, path, fd)
            return use(fd)
        finally:
            os.close(fd)

    def check(self, entry: Entry) -> None:
        self._opened(entry, lambda fd: None)

    def _verify(self, entry: Entry, path: Path, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise changed(entry, "it is no longer a regular file")
        if entry.size is not None and st.st_size != entry.size:
            raise changed(entry, f"size is now {st.st_size}, logged {entry.size}")
        if entry.extra.get(MTIME_NS) == st.st_mtime_ns and (not self._serves_other_users or _public(fd, st)):
            return
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            known = self._verified.get(key)
        if known is None:
            known = _md5_b64_of(fd)
            with self._lock:
                self._verified[key] = known
        if known != entry.digest:
            raise changed(entry, "its content changed (MD5 differs)")


def _public(fd: int, st: os.stat_result) -> bool:
    """Could any user read the open file ``fd`` without us: readable by others, in directories others may
    enter? The directories are those the kernel reached it through, not the ones a symlink showed."""
    if not st.st_mode & stat.S_IROTH:
        return False
    try:
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


def _read_fully(fd: int, targets: Sequence[memoryview], offset: int) -> int:
    """Fill ``targets`` from ``offset`` on, going on after short reads (NFS may return them) until end of file."""
    total = 0
    for target in targets:
        while len(target):
            n = os.preadv(fd, [target], offset + total)
            if n == 0:
                return total
            total, target = total + n, target[n:]
    return total


def _local_path(ref: RefURI) -> Path:
    if ref.netloc not in ("", "localhost"):
        raise InvalidInput(f"{ref.raw}: file:// references must be local (file:///path), not on host {ref.netloc!r}")
    return Path("/" + ref.path)


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under ``root`` in a stable order; symlinks only when they stay inside ``root``."""
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for fname in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath, fname)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    log.warning("skipping %s: symlink points outside %s", path, root)
                    continue
                if not target.is_file():
                    log.warning("skipping %s: symlink to something other than a regular file", path)
                    continue
            elif not path.is_file():
                continue  # sockets, fifos, devices: not data
            yield path.relative_to(root).as_posix(), path


def _entry_for(pair: tuple[str, Path]) -> Entry:
    rel, path = pair
    st = path.stat()
    digest = _md5_b64(path)
    return Entry(
        path=rel, ref=file_uri(path.absolute()), digest=digest, size=st.st_size, extra={MTIME_NS: st.st_mtime_ns}
    )


def _location_entry_for(pair: tuple[str, Path]) -> Entry:
    rel, path = pair
    ref = file_uri(path.absolute())
    return Entry(path=rel, ref=ref, digest=wandb_location_digest(ref), size=path.stat().st_size)


def _md5_b64(path: Path) -> str:
    with open(path, "rb") as f:
        return _md5_b64_of(f.fileno())


def _md5_b64_of(fd: int) -> str:
    """The MD5 of an open file, read from its start with pread (the descriptor's offset is left alone)."""
    h = hashlib.md5()
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return b64_md5(h.digest())


T = TypeVar("T")
R = TypeVar("R")
_pool = ThreadPoolExecutor(max_workers=_HASH_THREADS, thread_name_prefix="refmount-hash")


def _bounded_map(fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """Ordered parallel map that keeps at most ``window`` items in flight (Executor.map queues all)."""
    pending: collections.deque[Future[R]] = collections.deque()
    for item in items:
        pending.append(_pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
