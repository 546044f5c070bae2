"""Materializing a version on local disk.

It goes through the same pinned fetch path as the mount (Reader, block cache, stores), in
parallel. Downloads are resumable: files already present and correct are kept, new ones are
written under a temporary name and renamed only once complete and verified. A file is correct when
its MD5 matches one the manifest gives, or, where none does (multipart S3, GCS and Azure ETags), when
it still carries the stamp this module puts on every download it completes (an xattr naming the
pinned object and the file's mtime then; any later write moves the mtime). A failure that is not about
one object (see :mod:`refmount.batch`) ends the download at once, and directories it made that stayed
empty are removed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import trio

from .batch import batch
from .cache import BlockCache
from .errors import InvalidInput, RefmountError, StoreUnavailable, about
from .manifest import Entry
from .prefetch import Stream
from .reader import Reader, open_reader
from .registry import Registry, VersionInfo

ProgressFn = Callable[[int], None]  # bytes done since the last call
STAMP_XATTR = "user.refmount.download"


@dataclass
class Report:
    files: int = 0
    written: int = 0
    kept: int = 0
    skipped: int = 0  # pinned entries without a size (nothing says how many bytes to expect)
    unpinned: list[str] = field(default_factory=list)  # paths of entries with nothing to pin their bytes by
    bytes: int = 0
    failures: list[str] = field(default_factory=list)


def expected_md5(entry: Entry) -> bytes | None:
    """The MD5 the entry promises for its bytes, when it records one (file://, http(s) without an ETag)."""
    md5 = entry.content_md5
    return None if md5 is None else base64.b64decode(md5)


async def download(registry: Registry, version: VersionInfo, dest: Path, cache: BlockCache | None, *, jobs: int = 8,
                   prefix: str | None = None, progress: ProgressFn | None = None) -> Report:  # fmt: skip
    """Write the version's files (those at or under ``prefix``) under ``dest``."""
    entries = await trio.to_thread.run_sync(lambda: list(registry.entries_under(version, prefix)))
    root = Path(os.path.realpath(dest))  # unlike Path.resolve, no RuntimeError on a symlink loop
    made = _Directories(root)
    try:
        await trio.to_thread.run_sync(made.make, root)
        root.mkdir(exist_ok=True)  # a file in the way says so here
    except OSError as exc:
        raise InvalidInput(f"cannot create {dest}: {exc.strerror}") from None
    report = Report(files=len(entries))
    limiter = trio.CapacityLimiter(jobs)

    async def one(entry: Entry) -> None:
        async with limiter:
            try:
                await _download_entry(entry, root, made, reader, report, progress)
            except StoreUnavailable:
                raise  # not about this entry: it ends the download
            except RefmountError as exc:
                report.failures.append(about(entry.path, exc))

    try:
        async with open_reader(cache) as reader, batch() as jobs_:
            for entry in entries:
                if not entry.pinned:  # not served by the mount either: skipped, and the caller says so
                    report.unpinned.append(entry.path)
                    if progress:
                        progress(entry.size or 0)
                elif entry.size is None:
                    report.skipped += 1
                else:
                    jobs_.start_soon(one, entry)
        jobs_.raise_failure()
    except BaseException:
        await trio.to_thread.run_sync(made.remove_empty, True)
        raise
    await trio.to_thread.run_sync(made.remove_empty, False)  # left empty by entries that failed
    return report


class _Directories:
    """The directories a download made (dest included), so that those it leaves empty can be removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: list[Path] = []
        self._lock = threading.Lock()

    def make(self, directory: Path) -> None:
        """Make ``directory`` and its missing parents (up to the filesystem root for dest itself)."""
        missing = []
        while not directory.exists() and directory != directory.parent:
            missing.append(directory)
            directory = directory.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:  # made meanwhile by another entry (or a file is there: the next mkdir says)
                continue
            with self._lock:
                self._made.append(path)

    def remove_empty(self, with_root: bool) -> None:
        """Remove the directories made here that are empty, deepest first (dest itself only if ``with_root``)."""
        with self._lock:
            made = sorted(self._made, key=lambda path: len(path.parts), reverse=True)
        for path in made:
            if with_root or (path.is_relative_to(self.root) and path != self.root):
                with contextlib.suppress(OSError):  # not empty, or gone
                    path.rmdir()


async def _download_entry(entry: Entry, root: Path, made: _Directories, reader: Reader, report: Report,
                          progress: ProgressFn | None) -> None:  # fmt: skip
    target = root / entry.path
    if not Path(os.path.realpath(target.parent)).is_relative_to(root):  # a symlink in dest must not lead out
        raise InvalidInput(f"refusing to write outside {root}")
    if await trio.to_thread.run_sync(already_correct, entry, target):
        report.kept += 1
        if progress:
            progress(entry.size or 0)
        return
    with _locally(f"cannot create directory {target.parent}"):
        await trio.to_thread.run_sync(made.make, target.parent)
    written = await write_entry(entry, target, reader, progress)  # not `report.bytes += await ...`: that reads
    report.bytes += written  # report.bytes before the await, losing what other files added meanwhile
    report.written += 1


async def write_entry(entry: Entry, target: Path, reader: Reader, progress: ProgressFn | None = None) -> int:
    """Write the entry's bytes to ``target`` (whose directory exists) through a partial file, checked against
    the logged size and MD5 and stamped (see :func:`already_correct`); returns the bytes written."""
    partial = target.with_name(f".{target.name}.refmount-part")
    cannot_write = f"cannot write {target}"
    with _locally(cannot_write):
        out = await trio.to_thread.run_sync(_create_partial, partial)
    try:
        md5 = hashlib.md5()
        offset = 0
        stream = Stream(reader, entry)  # the next blocks are fetched while this one is written
        try:
            while offset < (entry.size or 0):
                with await stream.read(offset, reader.block_size) as chunk:  # held until written out
                    with _locally(cannot_write):
                        await trio.to_thread.run_sync(out.write, chunk)
                    md5.update(chunk)
                    done = len(chunk)
                offset += done
                if progress:
                    progress(done)
        finally:
            stream.cancel()
        with _locally(cannot_write):
            await trio.to_thread.run_sync(out.close)  # writes out the last bytes: a full disk may show only now
        want = expected_md5(entry)
        if offset != entry.size or (want is not None and md5.digest() != want):
            raise RefmountError(f"downloaded bytes do not match the logged {'MD5' if want else 'size'}")
        with _locally(cannot_write):
            os.replace(partial, target)
        _stamp(target, entry)
    except BaseException:  # failed or cancelled: no partial file is left behind
        with contextlib.suppress(OSError):
            out.close()
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    return offset


@contextlib.contextmanager
def _locally(what: str) -> Iterator[None]:
    """A local filesystem error (a directory where the file goes, a full disk) fails this entry alone.

    Only around local operations: an OSError from reading the source is not this.
    """
    try:
        yield
    except OSError as exc:
        in_the_way = isinstance(exc, FileExistsError | NotADirectoryError)
        raise RefmountError(f"{what}: {'a file is in the way' if in_the_way else exc.strerror or exc}") from None


def _create_partial(partial: Path) -> BinaryIO:
    """A new file at ``partial``, never opened through a link: whatever is there already (a stale partial,
    or a symlink planted to make us write elsewhere) is removed first, and O_EXCL|O_NOFOLLOW refuse
    anything that appears meanwhile."""
    partial.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.fdopen(os.open(partial, flags, 0o666), "wb")


def _proving_md5s(entry: Entry) -> list[bytes]:
    """MD5s that show a local copy holds the logged bytes: the digest's, and a 32-hex ETag.

    A single-part S3 upload's ETag is its hex MD5, except under SSE-KMS or SSE-C where it is not an MD5
    at all: it can only prove a copy right by matching, never show fetched bytes wrong.
    """
    md5s = [want] if (want := expected_md5(entry)) else []
    if len(entry.digest) == 32:
        with contextlib.suppress(ValueError):
            md5s.append(bytes.fromhex(entry.digest))
    return md5s


def _stamp_value(entry: Entry, st: os.stat_result) -> bytes:
    return json.dumps([entry.ref, entry.version_id, entry.digest, entry.size, st.st_mtime_ns]).encode()


def _stamp(target: Path, entry: Entry) -> None:
    """Mark a verified download, so that a later run can keep it even when no MD5 could prove it right."""
    with contextlib.suppress(OSError):  # no user xattrs on this filesystem: such files are fetched again
        os.setxattr(target, STAMP_XATTR, _stamp_value(entry, os.stat(target, follow_symlinks=False)),
                    follow_symlinks=False)  # fmt: skip


def _stamped(fd: int, entry: Entry, st: os.stat_result) -> bool:
    try:
        return os.getxattr(fd, STAMP_XATTR) == _stamp_value(entry, st)
    except OSError:  # no stamp, or no user xattrs here
        return False


def already_correct(entry: Entry, target: Path) -> bool:
    """Resume: keep a regular file of the right size whose MD5 proves it right or, unless the digest is an
    MD5 (which alone decides), that still carries our stamp for this object; fetch anything else again.

    Not a symlink, even to the right bytes: it would stay a way out of dest. O_NONBLOCK: opening a
    FIFO planted there must not hang the download.
    """
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return False
            if expected_md5(entry) is None and _stamped(f.fileno(), entry, st):
                return True  # cheaper than hashing, and the only proof when an ETag is not an MD5 (SSE-KMS)
            md5s = _proving_md5s(entry)
            return bool(md5s) and hashlib.file_digest(f, "md5").digest() in md5s
    except OSError:
        return False
