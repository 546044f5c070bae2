"""The pyfuse3 that scripts/setup.sh builds (3.5.0 + patches/pyfuse3-3.5.0.patch), through the real kernel.

Each test mounts tests/pyfuse3_tinyfs.py (a tiny pyfuse3 file system, not refmount) in a subprocess and
counts the requests that reach the daemon in libfuse's debug log, which also shows the requests that
pyfuse3 answers in C without calling Python. The Python handlers' own counts come from an xattr.

What the kernel keeps cached is lost when another process on the machine writes /proc/sys/vm/drop_caches
(benchmarks do), and single pages were seen to go while a benchmark ran beside these tests (never on a
quiet machine: 600 re-reads sent no READ). So a measurement of caching is repeated, on a fresh mount, if
the kernel's drop counters moved or the kernel fetched again what it should have kept; the assertions
then judge the last attempt, so a cache that never works still fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import pytest

from tests.mounts import answers, is_mounted, read_whole
from tests.pyfuse3_tinyfs import (
    CACHED_DIR,
    DIRS,
    FILE_A,
    FILE_B,
    HOLD_XATTR,
    INVALIDATE_XATTR,
    LINK,
    OPEN_FH_BASE,
    PLAIN_DIR,
    STATS_XATTR,
    file_data,
)

TINYFS = Path(__file__).with_name("pyfuse3_tinyfs.py")
FUSECTL = Path("/sys/fs/fuse/connections")
PASSES = 5  # times each file is opened, read to the end and closed
ENOSYS_REPLY = "error: -38 (Function not implemented)"
_REQUEST = re.compile(r"^unique: (\d+), opcode: (\w+) \(\d+\), nodeid: (\d+),")
_REPLY = re.compile(r"^\s+unique: (\d+), (.*?), outsize")
ATTEMPTS = 5
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    opcode: str
    nodeid: int
    reply: str | None  # "success", "error: -38 (Function not implemented)", ...; None if not answered yet


@dataclass
class TinyMount:
    path: Path
    log_file: Path
    settings: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> TinyMount:
        argv = [sys.executable, str(TINYFS), str(self.path), json.dumps(self.settings)]
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while not answers(self.path, self.stats):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tinyfs did not come up ({self.proc.poll()}):\n{self.log_file.read_text()[-3000:]}")
            time.sleep(0.05)
        return self

    def stats(self) -> dict[str, Any]:
        """What the Python handlers saw (the GETXATTR is never cached, so this is a round trip)."""
        return json.loads(os.getxattr(self.path, STATS_XATTR))

    def invalidate(self, inode: int) -> None:
        """pyfuse3.invalidate_inode(inode), called in the daemon."""
        os.setxattr(self.path, INVALIDATE_XATTR, b"%d" % inode)

    def settle(self) -> None:
        """Let requests the kernel sends in the background (release, read-ahead) arrive, then sync."""
        time.sleep(0.3)
        self.stats()

    def requests(self) -> list[Request]:
        opened: dict[str, tuple[str, int]] = {}
        replies: dict[str, str] = {}
        for line in self.log_file.read_text(errors="replace").splitlines():
            if match := _REQUEST.match(line):
                opened[match[1]] = (match[2], int(match[3]))
            elif match := _REPLY.match(line):
                replies[match[1]] = match[2]
        return [Request(op, node, replies.get(unique)) for unique, (op, node) in opened.items()]

    def stop(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def opcodes(requests: list[Request], nodeid: int | None = None) -> Counter[str]:
    return Counter(r.opcode for r in requests if nodeid is None or r.nodeid == nodeid)


@pytest.fixture
def tinyfs(tmp_path: Path) -> Iterator[Callable[..., TinyMount]]:
    """``tinyfs(**operations_attributes)`` mounts a fresh tiny file system; all are unmounted at teardown."""
    mounts: list[TinyMount] = []

    def make(**settings: Any) -> TinyMount:
        n = len(mounts)
        path = tmp_path / f"tiny{n}"
        path.mkdir()
        mount = TinyMount(path, tmp_path / f"tiny{n}.log", settings)
        mounts.append(mount)
        return mount.start()

    yield make
    for mount in mounts:
        mount.stop()


def cache_drops() -> tuple[int, int]:
    """How often caches were dropped through /proc/sys/vm/drop_caches since boot (pages, dentries+inodes)."""
    counters = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return int(counters["drop_pagecache"]), int(counters["drop_slab"])


def measure_quietly(measure: Callable[[], T], refetched: Callable[[T], bool]) -> T:
    """``measure()`` (which mounts afresh) up to ATTEMPTS times, until caches were neither dropped nor refetched."""
    for _ in range(ATTEMPTS):
        before = cache_drops()
        result = measure()
        if cache_drops() == before and not refetched(result):
            break
    return result


def read_files_in_passes(mount: TinyMount) -> list[list[Request]]:
    """Read both files PASSES times; the requests that each pass sent to the daemon."""
    passes = []
    for _ in range(PASSES):
        before = len(mount.requests())
        for name, inode in (("a.bin", FILE_A), ("b.bin", FILE_B)):
            assert read_whole(mount.path / name) == file_data(inode), name
        mount.settle()
        passes.append(mount.requests()[before:])
    return passes


def test_features_are_detectable_by_attributes_with_defaults_that_change_nothing() -> None:
    assert hasattr(pyfuse3.FileInfo, "cache_readdir")
    assert pyfuse3.FileInfo().cache_readdir is False
    info = pyfuse3.FileInfo(fh=7, keep_cache=True, cache_readdir=True)
    assert (info.fh, info.keep_cache, info.cache_readdir, info.direct_io) == (7, True, True, False)
    expected = {"max_background": 0, "congestion_threshold": 0, "enable_no_open": False, "enable_cache_symlinks": False}
    assert {name: getattr(pyfuse3.Operations, name, "missing") for name in expected} == expected


def test_opendir_fileinfo_with_cache_readdir_lets_the_kernel_answer_the_second_listing(
    tinyfs: Callable[..., TinyMount],
) -> None:

    def list_three_times() -> tuple[TinyMount, list[list[Request]]]:
        mount = tinyfs()
        listings = []
        for listing in range(3):
            if listing == 2:
                mount.invalidate(CACHED_DIR)
            before = len(mount.requests())
            for inode, name in ((CACHED_DIR, "cached"), (PLAIN_DIR, "plain")):
                assert sorted(os.listdir(mount.path / name)) == sorted(n.decode() for n, _ in DIRS[inode])
            mount.settle()
            listings.append(mount.requests()[before:])
        return mount, listings

    def readdirs(requests: list[Request], nodeid: int) -> int:
        counts = opcodes(requests, nodeid)
        return counts["READDIRPLUS"] + counts["READDIR"]

    mount, (first, second, after_invalidation) = measure_quietly(
        list_three_times, lambda result: readdirs(result[1][1], CACHED_DIR) > 0
    )

    # opendir returned FileInfo(keep_cache=True, cache_readdir=True): the second listing is the kernel's,
    # until pyfuse3.invalidate_inode() drops it
    assert readdirs(first, CACHED_DIR) >= 1
    assert readdirs(second, CACHED_DIR) == 0, second
    assert readdirs(after_invalidation, CACHED_DIR) == readdirs(first, CACHED_DIR)
    # opendir returned a plain int, as stock pyfuse3 allows: every listing reaches readdir
    assert readdirs(first, PLAIN_DIR) >= 1
    assert readdirs(second, PLAIN_DIR) == readdirs(first, PLAIN_DIR)
    # the directory is still opened each time (only opendir answered ENOSYS would stop that)
    assert opcodes(second, CACHED_DIR)["OPENDIR"] == 1
    # and the Python handler saw exactly the requests in the log, with the handle opendir chose
    handles = mount.stats()["readdir_handles"]
    assert handles == {str(CACHED_DIR): 2 * readdirs(first, CACHED_DIR), str(PLAIN_DIR): 3 * readdirs(first, PLAIN_DIR)}


def test_enable_no_open_keeps_open_flush_and_release_out_of_python_and_reads_get_the_inode(
    tinyfs: Callable[..., TinyMount],
) -> None:

    def read_in_passes() -> tuple[TinyMount, list[list[Request]]]:
        mount = tinyfs(enable_no_open=True)
        return mount, read_files_in_passes(mount)

    mount, passes = measure_quietly(read_in_passes, lambda result: any(opcodes(p)["READ"] for p in result[1][1:]))
    everything = [r for requests in passes for r in requests]
    counts = opcodes(everything)

    # One OPEN reaches libfuse, the first one, and pyfuse3 answers it ENOSYS in C; the kernel never
    # sends another (not even for these O_RDONLY opens) and sends no RELEASE for such files.
    opens = [r for r in everything if r.opcode == "OPEN"]
    assert [(r.nodeid, r.reply) for r in opens] == [(FILE_A, ENOSYS_REPLY)]
    assert counts["RELEASE"] == 0
    # The kernel still flushes on close until told ENOSYS, which pyfuse3 does at once, in C.
    flushes = [r for r in everything if r.opcode == "FLUSH"]
    assert [r.reply for r in flushes] == [ENOSYS_REPLY]
    # Every open is FOPEN_KEEP_CACHE: after the first pass, the bytes come from the page cache.
    assert opcodes(passes[0])["READ"] >= 2
    assert [opcodes(requests)["READ"] for requests in passes[1:]] == [0] * (PASSES - 1)

    stats = mount.stats()
    assert {name: stats["calls"].get(name, 0) for name in ("open", "flush", "release")} == {
        "open": 0, "flush": 0, "release": 0}  # fmt: skip
    # read() got the inode number as its file handle (and served the right bytes, checked above)
    assert stats["read_handles"] == {
        str(FILE_A): opcodes(passes[0], FILE_A)["READ"], str(FILE_B): opcodes(passes[0], FILE_B)["READ"]}  # fmt: skip


def test_without_no_open_every_open_and_close_reaches_python(tinyfs: Callable[..., TinyMount]) -> None:
    """The same reads without enable_no_open: the counting above sees opens, flushes, releases and re-reads."""
    mount = tinyfs()
    passes = read_files_in_passes(mount)
    # open() returned keep_cache=False, so every pass reads both files again (no-open implies keep_cache)
    assert all(opcodes(requests)["READ"] >= 2 for requests in passes), [opcodes(r) for r in passes]
    expected = (2 * PASSES,) * 3

    def counts() -> tuple[int, int, int]:
        found = opcodes(mount.requests())
        return found["OPEN"], found["FLUSH"], found["RELEASE"]

    deadline = time.monotonic() + 10  # the kernel sends RELEASE in the background: on a busy machine, late
    while counts() != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts() == expected
    stats = mount.stats()
    assert (stats["calls"]["open"], stats["calls"]["flush"], stats["calls"]["release"]) == expected
    assert set(stats["read_handles"]) == {str(OPEN_FH_BASE + FILE_A), str(OPEN_FH_BASE + FILE_B)}


@pytest.mark.parametrize(("enabled", "readlinks"), [(True, [1, 2]), (False, [3, 4])])
def test_enable_cache_symlinks_sends_readlink_once_until_invalidated(
    tinyfs: Callable[..., TinyMount], enabled: bool, readlinks: list[int]
) -> None:

    def read_link() -> tuple[TinyMount, list[int]]:
        mount = tinyfs(enable_cache_symlinks=enabled)
        counts = []
        for calls in (3, 1):  # three readlinks, then pyfuse3.invalidate_inode(LINK) and one more
            if counts:
                mount.invalidate(LINK)
            for _ in range(calls):
                assert os.readlink(mount.path / "link") == "a.bin"
            mount.settle()
            counts.append(opcodes(mount.requests(), LINK)["READLINK"])
        return mount, counts

    mount, counts = measure_quietly(read_link, lambda result: result[1] != readlinks)
    assert counts == readlinks
    assert mount.stats()["calls"]["readlink"] == readlinks[-1]


@pytest.fixture
def fusectl() -> Iterator[Path]:
    """/sys/fs/fuse/connections, mounted for the test if it is not (and unmounted again)."""
    mounted_here = False
    if not is_mounted(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)], check=True)
        mounted_here = True
    yield FUSECTL
    if mounted_here:
        subprocess.run(["umount", str(FUSECTL)], check=True)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"max_background": 37, "congestion_threshold": 20}, (37, 20)),
        ({"max_background": 40}, (40, 30)),  # libfuse derives the threshold: 3/4 of max_background
        ({}, (12, 9)),  # zero leaves the kernel's defaults
    ],
)
def test_max_background_and_congestion_threshold_reach_the_kernel(
    tinyfs: Callable[..., TinyMount], fusectl: Path, settings: dict[str, int], expected: tuple[int, int]
) -> None:
    mount = tinyfs(**settings)
    dev = os.stat(mount.path).st_dev
    connection = fusectl / str((os.major(dev) << 20) | os.minor(dev))  # the kernel's dev_t encoding
    values = tuple(int((connection / name).read_text()) for name in ("max_background", "congestion_threshold"))
    assert values == expected


def test_requests_are_answered_while_a_handler_waits_and_when_many_are_queued(
    tinyfs: Callable[..., TinyMount],
) -> None:
    """The main loop reads queued requests one after the other (the device is non-blocking): a handler that
    waits must still leave the others answered, and a burst from many threads must get every answer right."""
    mount = tinyfs()
    os.setxattr(mount.path, HOLD_XATTR, b"1")
    with ThreadPoolExecutor(17) as pool:
        held = pool.submit(read_whole, mount.path / "b.bin")
        deadline = time.monotonic() + 10
        while mount.stats()["calls"].get("held", 0) == 0:
            assert time.monotonic() < deadline, "the read of b.bin never reached the daemon"
            time.sleep(0.01)
        # open() with keep_cache=False drops the pages: every pass reads through the daemon
        burst = [pool.submit(read_whole, mount.path / "a.bin") for _ in range(16 * 8)]
        assert all(future.result(timeout=30) == file_data(FILE_A) for future in burst)
        assert not held.done()
        os.setxattr(mount.path, HOLD_XATTR, b"0")
        assert held.result(timeout=10) == file_data(FILE_B)
    assert mount.stats()["calls"]["open"] == 16 * 8 + 1  # each open was answered by Python, one at a time
