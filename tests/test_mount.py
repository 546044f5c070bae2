"""The FUSE daemon through the real kernel: namespace, bytes, pinning, caching, lifecycle."""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.cache import BlockCache, block_key
from refmount.reader import BLOCK_SIZE
from refmount.registry import open_registry
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import is_mounted, read_whole, wait_for
from tests.server_http import StallingServer
from tests.servers import S3Env, free_port


def make_tree(root: Path, seed: int) -> dict[str, bytes]:
    files = {
        "train/0001.png": b"png-%d" % seed,
        "train/deep/er/x.bin": os.urandom(3000),
        "empty": b"",
        "labels.csv": b"a,b\n%d\n" % seed,
        "big.bin": os.urandom(2 * BLOCK_SIZE + 12345),  # three blocks, the last one short
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def log(registry_url: str, target: str, uri: str, **kw: Any) -> str:
    project, name = target.split("/")
    art = refmount.Artifact(name, type="dataset")
    art.add_reference(uri)
    return refmount.log_artifact(art, project=project, registry=registry_url, **kw)


@pytest.fixture
def two_versions(tmp_path: Path, registry_url: str) -> list[dict[str, bytes]]:
    trees = []
    for seed in range(2):
        root = tmp_path / f"src{seed}"
        trees.append(make_tree(root, seed))
        log(registry_url, "vision/mnist", file_uri(root))
    return trees


def test_namespace_and_every_byte(two_versions: list[dict[str, bytes]], mount_factory: Any) -> None:
    m = mount_factory()
    assert os.listdir(m.path) == ["vision"]
    assert os.listdir(m.path / "vision") == ["mnist"]
    assert sorted(os.listdir(m.path / "vision" / "mnist")) == ["latest", "v0", "v1"]
    assert os.readlink(m.path / "vision" / "mnist" / "latest") == "v1"
    for index, tree in enumerate(two_versions):
        version = m.path / "vision" / "mnist" / f"v{index}"
        found = {p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file()}
        assert found == set(tree)
        for rel, data in tree.items():
            assert (version / rel).read_bytes() == data, rel
            st = (version / rel).stat()
            assert st.st_size == len(data) and st.st_mode & 0o777 == 0o444
    assert (m.path / "vision/mnist/latest/labels.csv").read_bytes() == two_versions[1]["labels.csv"]
    assert os.path.realpath(m.path / "vision/mnist/latest") == str(m.path / "vision/mnist/v1")
    with open(m.path / "vision/mnist/v1/big.bin", "rb") as f:  # random access across block boundaries
        f.seek(BLOCK_SIZE - 10)
        assert f.read(20) == two_versions[1]["big.bin"][BLOCK_SIZE - 10 : BLOCK_SIZE + 10]


@pytest.mark.parametrize("lineage", [False, True])
def test_second_walk_and_reread_stay_in_the_kernel(two_versions: list[dict[str, bytes]], mount_factory: Any,
                                                    lineage: bool) -> None:  # fmt: skip
    # alias_ttl: so that the path down to v0 (namespace entries) stays cached too
    m = mount_factory(alias_ttl=300, extra_args=() if lineage else ("--no-lineage",))
    version = m.path / "vision" / "mnist" / "v0"
    walk = lambda: [(p, p.stat().st_size) for p in sorted(version.rglob("*"))]  # noqa: E731
    first = walk()
    data = (version / "big.bin").read_bytes()
    before = m.stats()
    assert walk() == first
    assert (version / "big.bin").read_bytes() == data
    after = m.stats()
    # Lookups and attributes are cached, version directories keep their listings (FOPEN_CACHE_DIR: the
    # kernel still opens a directory to list it), no open of a file reaches the daemon and the page cache
    # serves the re-read. (Reading the stats is two getxattr requests: its size, then its value.)
    # With lineage the open of the file reaches the daemon, and its release (sent in the background: it may come
    # after the stats were read): nothing else does.
    asked = {kind: n - before["requests"].get(kind, 0) for kind, n in after["requests"].items()}
    assert asked.pop("release", 0) <= lineage
    assert {kind: n for kind, n in asked.items() if n and kind not in ("opendir", "releasedir")} == {
        "getxattr": 2, **({"open": 1} if lineage else {})}  # fmt: skip
    assert asked["opendir"] == asked["releasedir"] > 0 and asked["readdir"] == 0


class _Dirent(ctypes.Structure):  # glibc's struct dirent on 64-bit Linux
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]  # fmt: skip


def raw_listing(path: Path, start: int | None = None) -> list[tuple[str, int, int]]:
    """(name, d_ino, d_off) of every entry readdir(3) returns, ``.`` and ``..`` included (os.listdir and
    os.scandir drop them), from the start or from the position ``start`` (seekdir(3) to a d_off)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype, libc.opendir.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    libc.readdir.restype, libc.readdir.argtypes = ctypes.POINTER(_Dirent), [ctypes.c_void_p]
    libc.seekdir.argtypes, libc.closedir.argtypes = [ctypes.c_void_p, ctypes.c_long], [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(path))
    assert handle, os.strerror(ctypes.get_errno())
    try:
        if start is not None:
            libc.seekdir(handle, start)
        out = []
        while entry := libc.readdir(handle):
            out.append((entry.contents.d_name.decode(), entry.contents.d_ino, entry.contents.d_off))
        return out
    finally:
        libc.closedir(handle)


def test_every_directory_lists_dot_and_dotdot_first(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    make_tree(tmp_path / "src", 0)
    for i in range(300):  # more than one kernel request of entries: the listing goes on across requests
        (tmp_path / "src/many" / f"file-with-a-longish-name-{i:04}.bin").parent.mkdir(exist_ok=True)
        (tmp_path / "src/many" / f"file-with-a-longish-name-{i:04}.bin").write_bytes(b"x")
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    chain = [m.path, m.path / "p", m.path / "p/ds", m.path / "p/ds/v0", m.path / "p/ds/v0/many"]
    for path, parent in zip(chain, [m.path, *chain], strict=False):  # the root's `..` is the root itself
        for _ in range(2):  # asked of the daemon, then (inside a version) from the kernel's cached listing
            listing = raw_listing(path)
            assert [(name, ino) for name, ino, _ in listing[:2]] == [(".", path.stat().st_ino),
                                                                     ("..", parent.stat().st_ino)]  # fmt: skip
            names = [name for name, _, _ in listing[2:]]
            assert sorted(names) == sorted(os.listdir(path)) and len(set(names)) == len(names)
        # A listing resumed where telldir(3) left it (after `.`, after `..`, midway, at the end) goes on from there.
        for i in {0, 1, len(listing) // 2, len(listing) - 1}:
            assert raw_listing(path, start=listing[i][2]) == listing[i + 1 :], (path, i)
    assert subprocess.run(["ls", "-a", chain[-1]], capture_output=True, text=True).stdout.split()[:2] == [".", ".."]
    assert len(listing) == 302


def test_find_follows_an_alias_with_L_or_a_trailing_slash(two_versions: Any, mount_factory: Any) -> None:
    latest = mount_factory().path / "vision/mnist/latest"

    def found(*args: str) -> int:
        out = subprocess.run(["find", *args, "-type", "f"], capture_output=True, text=True, check=True).stdout
        return len(out.splitlines())

    assert (found(str(latest)), found("-L", str(latest)), found(f"{latest}/")) == (0, 5, 5)  # as the README says


def test_alias_moves_and_open_files_keep_their_version(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    first = make_tree(tmp_path / "a", 1)
    log(registry_url, "p/ds", file_uri(tmp_path / "a"))
    m = mount_factory(alias_ttl=0.5)
    held = open(m.path / "p/ds/latest/labels.csv", "rb")  # noqa: SIM115 - held open across the alias move
    assert sorted(os.listdir(m.path / "p/ds")) == ["latest", "v0"]
    second = make_tree(tmp_path / "b", 2)
    log(registry_url, "p/ds", file_uri(tmp_path / "b"), aliases=["best"])
    deadline = time.monotonic() + 5
    while os.readlink(m.path / "p/ds/latest") != "v1":
        assert time.monotonic() < deadline, "the new version never showed"
        time.sleep(0.1)
    assert sorted(os.listdir(m.path / "p/ds")) == ["best", "latest", "v0", "v1"]  # listings above versions refresh
    assert os.readlink(m.path / "p/ds/best") == "v1"
    assert (m.path / "p/ds/latest/labels.csv").read_bytes() == second["labels.csv"]
    assert held.read() == first["labels.csv"]  # opened through the old alias: still v0
    held.close()
    open_registry(registry_url).set_alias("p", "ds", "best", 0)
    time.sleep(1.0)
    assert os.readlink(m.path / "p/ds/best") == "v0"


def test_changed_source_is_eio_never_new_bytes(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    (tmp_path / "src" / "labels.csv").write_bytes(b"tampered")
    with pytest.raises(OSError) as info:
        (m.path / "p/ds/v0/labels.csv").read_bytes()
    assert info.value.errno == errno.EIO
    assert "p/ds:v0/labels.csv" in m.log() and file_uri(tmp_path / "src" / "labels.csv") in m.log()
    assert (m.path / "p/ds/v0/train/0001.png").read_bytes() == b"png-0"  # the daemon carries on


def test_read_only_and_missing(two_versions: list[dict[str, bytes]], mount_factory: Any) -> None:
    m = mount_factory()
    v0 = m.path / "vision/mnist/v0"
    attempts = [
        lambda: open(v0 / "labels.csv", "r+b"),  # noqa: SIM115
        lambda: open(v0 / "new", "wb"),  # noqa: SIM115
        lambda: (v0 / "d").mkdir(),
        lambda: (v0 / "labels.csv").unlink(), lambda: (v0 / "labels.csv").rename(v0 / "x"),
        lambda: os.chmod(v0 / "labels.csv", 0o777), lambda: os.truncate(v0 / "labels.csv", 0),
        lambda: os.symlink("x", v0 / "link"), lambda: os.setxattr(v0 / "labels.csv", "user.x", b"1"),
        lambda: shutil.rmtree(v0 / "train"), lambda: (m.path / "newproject").mkdir(),
    ]  # fmt: skip
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    for missing in ("nope", "vision/nope", "vision/mnist/v7", "vision/mnist/nope", "vision/mnist/v0/nope"):
        assert not (m.path / missing).exists()
    assert (v0 / "labels.csv").read_bytes() == two_versions[0]["labels.csv"]


def test_xattrs(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    path = m.path / "p/ds/v0/labels.csv"
    assert os.getxattr(path, "user.refmount.ref").decode() == file_uri(tmp_path / "src" / "labels.csv")
    assert len(os.getxattr(path, "user.refmount.digest")) == 24
    assert set(os.listxattr(path)) == {"user.refmount.ref", "user.refmount.digest"}
    with pytest.raises(OSError):
        os.getxattr(path, "user.refmount.etag")  # file:// entries have no ETag
    out = subprocess.run(["getfattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    assert "user.refmount.ref=" in out


def test_s3_pinned_reads_and_eio_after_overwrite(s3_env: S3Env, cli: Cli, mount_factory: Any) -> None:
    versioned, plain = s3_env.bucket(versioned=True), s3_env.bucket()
    for b in (versioned, plain):
        s3_env.put(b, "ds/a.bin", b"logged bytes")
        s3_env.put(b, "ds/sub/b.bin", os.urandom(1000))
        cli("log", f"p/{b}", f"s3://{b}/ds/")
    m = mount_factory()
    for b in (versioned, plain):
        s3_env.put(b, "ds/a.bin", b"NEW BYTES!!!")  # same size, other bytes
    assert (m.path / f"p/{versioned}/v0/a.bin").read_bytes() == b"logged bytes"
    with pytest.raises(OSError) as info:
        (m.path / f"p/{plain}/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert "overwritten" in m.log()
    assert "S3 is not usable" not in m.log()
    assert os.getxattr(m.path / f"p/{versioned}/v0/a.bin", "user.refmount.version")


def test_unreachable_store_gives_eio_and_the_daemon_goes_on(s3_env: S3Env, cli: Cli, mount_factory: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    b = s3_env.bucket()
    s3_env.put(b, "ds/a.bin", b"logged bytes")
    cli("log", f"p/{b}", f"s3://{b}/ds/")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    m = mount_factory()
    with pytest.raises(OSError) as info:
        (m.path / f"p/{b}/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO
    assert f"EIO for p/{b}:v0/a.bin" in m.log() and "cannot reach the S3 endpoint" in m.log()
    assert os.listdir(m.path / f"p/{b}/v0") == ["a.bin"] and m.stats()["read_errors"] >= 1  # still serving


def test_a_broken_aws_setup_does_not_matter_without_artifacts_on_s3(
    two_versions: list[dict[str, bytes]], mount_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only stores the registry references are checked and prepared (tests/test_store_check.py: the others)."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    m = mount_factory()
    assert (m.path / "vision/mnist/v1/labels.csv").read_bytes() == two_versions[1]["labels.csv"]
    assert "no-such-profile" not in m.log() and "s3://" not in m.log()


def test_cache_survives_remount_and_recovers_corrupt_blocks(tmp_path: Path, registry_url: str,
                                                            mount_factory: Any) -> None:  # fmt: skip
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    first = mount_factory()
    assert (first.path / "p/ds/v0/big.bin").read_bytes() == tree["big.bin"]
    assert first.stats()["fetches"] == 3
    first.stop()

    second = mount_factory()  # a new daemon, same cache directory
    assert (second.path / "p/ds/v0/big.bin").read_bytes() == tree["big.bin"]
    stats = second.stats()
    assert stats["fetches"] == 0 and stats["disk_hits"] == 3
    second.stop()

    entry = open_registry(registry_url).manifest_index(refmount.use_artifact("p/ds:v0", registry=registry_url)
                                                        .manifest_id).entry("big.bin")  # fmt: skip
    assert entry is not None
    cache = BlockCache(tmp_path / "cache", 1 << 30)
    block = cache.block_file(block_key(entry, BLOCK_SIZE, 1))
    cache.close()
    assert block is not None
    damaged = bytearray(block.read_bytes())
    damaged[100] ^= 0xFF
    block.write_bytes(bytes(damaged))
    third = mount_factory()
    assert (third.path / "p/ds/v0/big.bin").read_bytes() == tree["big.bin"]
    stats = third.stats()
    assert stats["fetches"] == 1 and stats["disk_hits"] == 2
    assert "corrupt cache block" in third.log()


@pytest.fixture
def small_file(tmp_path: Path, registry_url: str, mount_factory: Any) -> tuple[Any, Path, bytes]:
    """A mount, the path of a small file in it, and the file's bytes."""
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    return m, m.path / "p/ds/v0/train/deep/er/x.bin", (tmp_path / "src/train/deep/er/x.bin").read_bytes()


def test_concurrent_reads_of_one_block_fetch_once(small_file: tuple[Any, Path, bytes]) -> None:
    m, path, expected = small_file
    results: list[bytes] = []
    start = threading.Barrier(8)

    def reader() -> None:
        start.wait()
        with open(path, "rb", buffering=0) as f:
            results.append(f.read())

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 8
    assert m.stats()["fetches"] == 1


def test_a_small_file_in_memory_is_stored_in_the_page_cache_at_its_open(small_file: tuple[Any, Path, bytes]) -> None:
    m, path, expected = small_file  # with lineage (the default): opens reach the daemon

    def counts() -> tuple[int, int, int]:
        stats = m.stats()
        return stats["requests"].get("read", 0), stats["stored_files"], stats["read_bytes"]

    def read_dropped(fd: int) -> bytes:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the kernel's pages of the file go
        return os.read(fd, 1 << 16)

    path.stat()  # its lookup fetches it (a small file): in the daemon's memory, not yet in the kernel's
    wait_for(lambda: m.stats()["fetches"] == 1, "the fetch started by the lookup")
    cold = counts()
    assert cold[:2] == (0, 0)
    first = os.open(path, os.O_RDONLY)
    try:
        assert os.read(first, 1 << 16) == expected
        stored = counts()
        assert stored[:2] == (cold[0], cold[1] + 1)  # given to the kernel with the open: no read reached the daemon
        # While one open of the file is alive another gets nothing at its open (a read of the first could be in
        # flight, holding the pages the kernel would store into): its read asks the daemon, and gets the bytes.
        second = os.open(path, os.O_RDONLY)
        try:
            assert read_dropped(second) == expected
        finally:
            os.close(second)
    finally:
        os.close(first)
    reads, stores, served = counts()
    assert reads > stored[0] and stores == stored[1]
    assert served - cold[2] == 2 * len(expected)  # the daemon served the file twice: stored once, read once
    with open(path, "rb") as again:  # the kernel has the file since that read: nothing is stored again
        assert again.read() == expected
    assert counts()[1] == stores


def test_opens_and_reads_of_one_file_racing_with_dropped_pages_all_get_its_bytes(
    tmp_path: Path, registry_url: str, mount_factory: Any
) -> None:
    """Stores at open racing with reads in flight and pages dropped: every read gets the bytes, and none waits
    for another (a store into pages a read holds would wait for the daemon's own answer). The file is one
    block but several read requests, so reads that drop its pages let later opens store it again."""
    expected = os.urandom(4 << 20)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f.bin").write_bytes(expected)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    path = m.path / "p/ds/v0/f.bin"

    read_dropped = functools.partial(read_whole, path, drop_pages=True)
    assert read_dropped() == expected  # in the daemon's memory now; read in parts, so not given to the kernel whole
    stored = m.stats()["stored_files"]
    assert read_dropped() == expected and m.stats()["stored_files"] == stored + 1  # stored with the open, dropped
    wrong: list[int] = []

    def reader() -> None:
        for _ in range(40):
            if (data := read_dropped()) != expected:
                wrong.append(len(data))

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and not wrong


def test_two_mounts_sharing_a_cache_fetch_a_cold_file_once(registry_url: str, mount_factory: Any,
                                                           stalling_http: StallingServer) -> None:  # fmt: skip
    """The second daemon to miss a block waits for the first one's fetch (a claim in the shared cache directory)."""
    stalling_http.stall = ""
    log(registry_url, "p/slow", stalling_http.url)
    stalling_http.stall = "GET"
    first, second = mount_factory(), mount_factory()  # the same cache directory
    got: list[bytes] = []

    def read(m: Any) -> None:
        got.append((m.path / "p/slow/v0/slow.bin").read_bytes())

    readers = [threading.Thread(target=read, args=(first,))]
    readers[0].start()
    assert stalling_http.arrived.wait(30)
    readers.append(threading.Thread(target=read, args=(second,)))
    readers[1].start()
    deadline = time.monotonic() + 30
    while "->" not in Path("/proc/locks").read_text():  # the second daemon waits on the first one's claim
        assert time.monotonic() < deadline, "the second daemon never waited for the first one's fetch"
        time.sleep(0.02)
    stalling_http.release.set()
    for reader in readers:
        reader.join(30)
    assert got == [stalling_http.body] * 2
    assert stalling_http.requests.count("GET") == 1
    assert second.stats()["fetches"] == 0 and second.stats()["waited_for_other_process"] == 1


def test_sigterm_unmounts_cleanly(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory()
    assert m.stop(signal.SIGTERM) == 0
    assert not is_mounted(m.path)
    assert "unmounted" in m.log()


def test_sigterm_as_the_mount_comes_up_still_unmounts_cleanly(tmp_path: Path, registry_url: str) -> None:
    """A signal that comes before the daemon answers its first request (or before it mounted) is not lost."""
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    for n in range(4):
        mnt = tmp_path / f"early{n}"
        mnt.mkdir()
        argv = [sys.executable, "-m", "refmount", "mount", str(mnt), "--foreground", "--registry", registry_url,
                "--cache-dir", str(tmp_path / "cache"), "--log-file", str(tmp_path / f"early{n}.log")]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not is_mounted(mnt) and proc.poll() is None:
                assert time.monotonic() < deadline, "the mount never came up"
                time.sleep(0.001)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, proc.stderr.read().decode()  # type: ignore[union-attr]
            assert not is_mounted(mnt)
        finally:
            if proc.poll() is None:
                proc.kill()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_a_restart_under_a_reader_keeps_its_open_file_readable(tmp_path: Path, registry_url: str,
                                                              mount_factory: Any) -> None:  # fmt: skip
    """SIGTERM detaches the mount (a new daemon can mount there at once) and serves open files until they close."""
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    old = mount_factory(extra_args=("--stop-timeout", "120"))
    assert old.proc is not None
    with open(old.path / "p/ds/v0/big.bin", "rb", buffering=0) as held:
        assert held.read(10) == tree["big.bin"][:10]
        old.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while is_mounted(old.path):
            assert time.monotonic() < deadline, "SIGTERM did not detach the mount"
            time.sleep(0.05)
        assert os.listdir(old.path) == []  # nothing new can be opened through the old daemon
        new = mount_factory(path=old.path, log_file=tmp_path / "new.log")
        assert (new.path / "p/ds/v0/labels.csv").read_bytes() == tree["labels.csv"]
        held.seek(BLOCK_SIZE + 5)  # a block never read before: the old daemon fetches it now
        assert held.read(100) == tree["big.bin"][BLOCK_SIZE + 5 : BLOCK_SIZE + 105]
        assert old.proc.poll() is None
    assert old.proc.wait(30) == 0  # the last open file closed: the old daemon is done
    assert "detaching" in old.log() and "unmounted" in old.log() and "stop timeout" not in old.log()
    assert (new.path / "p/ds/v0/train/0001.png").read_bytes() == tree["train/0001.png"]


def test_sigterm_with_reads_stalled_on_a_store_ends_at_the_stop_timeout(
    registry_url: str, mount_factory: Any, stalling_http: StallingServer
) -> None:
    stalling_http.stall = ""  # logging asks HEAD: answered
    log(registry_url, "p/slow", stalling_http.url)
    stalling_http.stall = "GET"
    m = mount_factory(extra_args=("--stop-timeout", "2"))
    assert m.proc is not None
    errors: list[OSError] = []

    def read() -> None:
        try:
            (m.path / "p/slow/v0/slow.bin").read_bytes()
        except OSError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert stalling_http.arrived.wait(30)
    started = time.monotonic()
    m.proc.send_signal(signal.SIGTERM)
    m.proc.wait(60)
    assert time.monotonic() - started < 15  # the store would hold the read for minutes
    reader.join(30)
    assert not reader.is_alive() and len(errors) == 1
    assert "stop timeout (2 s) reached" in m.log()


def test_alias_ttl_zero_mounts_and_serves(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    """Nothing in the daemon may stat its own mount from its event loop: with no caching at all, it would wait
    on itself."""
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    m = mount_factory(alias_ttl=0)
    assert (m.path / "p/ds/latest/labels.csv").read_bytes() == tree["labels.csv"]


def test_stale_mount_is_recovered(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    crashed = mount_factory()
    assert crashed.proc is not None
    crashed.proc.kill()  # no unmount: the kernel mount stays, with nobody behind it
    crashed.proc.wait()
    with pytest.raises(OSError) as info:
        os.listdir(crashed.path)
    assert info.value.errno == errno.ENOTCONN
    again = mount_factory(path=crashed.path, log_file=tmp_path / "again.log")
    assert (again.path / "p/ds/v0/labels.csv").read_bytes() == b"a,b\n0\n"


def test_daemon_mode_and_umount_command(tmp_path: Path, registry_url: str, cli: Cli) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    mnt = tmp_path / "daemon-mnt"
    mnt.mkdir()
    try:
        cli("mount", str(mnt), "--cache-dir", str(tmp_path / "cache"))  # returns once the mount answers
        assert (mnt / "p/ds/v0/labels.csv").read_bytes() == b"a,b\n0\n"
        assert "already a mount point" in cli("mount", str(mnt), ok=False).err
        cli("umount", str(mnt))
        assert not is_mounted(mnt)
        assert "is not mounted" in cli("umount", str(mnt), ok=False).err
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)


def test_mount_errors_are_one_line(tmp_path: Path, cli: Cli) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    for args, message in {
        ("mount", str(tmp_path / "missing")): "does not exist",
        ("mount", str(full)): "is not empty",
        ("mount", str(tmp_path / "file")): "is a file",
        ("mount", str(full), "--cache-size", "lots"): "invalid cache_size",
        ("mount", str(full), "--dir-readahead", "-1"): "Invalid value for '--dir-readahead'",
        (str(tmp_path / "missing"),): "does not exist",  # the bare `refmount MOUNTPOINT` form
    }.items():
        result = cli(*args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_memory_does_not_hold_entries(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    """Walking a 20,000-entry version leaves the daemon small (inodes are computed, not stored)."""
    from refmount.manifest import Entry, Manifest

    entries = [Entry(f"d{i % 50}/f{i}.bin", f"s3://bucket/k{i}", f"etag{i}", 1, {"etag": f"etag{i}"})
               for i in range(20_000)]  # fmt: skip
    open_registry(registry_url, create=True).log_version("p", "big", Manifest(entries), type="dataset")
    m = mount_factory()
    assert m.proc is not None
    rss_before = _rss_kib(m.proc.pid)
    count = sum(1 for _ in (m.path / "p/big/v0").rglob("*.bin"))
    assert count == 20_000
    assert _rss_kib(m.proc.pid) - rss_before < 30_000, "memory grew with the entries walked"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hostile_registry_names_are_not_shown(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    import sqlite3

    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    db = sqlite3.connect(registry_url.removeprefix("sqlite://"))
    db.execute("UPDATE nodes SET name = '../escape' WHERE name = 'labels.csv'")
    db.execute("UPDATE nodes SET name = 'a/b' WHERE name = 'empty'")
    db.commit()
    db.close()
    m = mount_factory()
    assert sorted(os.listdir(m.path / "p/ds/v0")) == ["big.bin", "train"]
    assert "invalid name" in m.log()


def test_files_others_may_not_read_are_md5_checked_before_allow_other_serves_them(
    tmp_path: Path, cli: Cli, mount_factory: Any
) -> None:
    # A forged entry: another file's size and mtime (anyone can stat them) under a made-up digest.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    secret, genuine = private / "secret", private / "genuine"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    genuine.write_bytes(b"logged for real")
    st = secret.stat()
    forged = {"digest": "AAAAAAAAAAAAAAAAAAAAAA==", "ref": file_uri(secret), "size": st.st_size,
              "extra": {"mtime_ns": st.st_mtime_ns}}  # fmt: skip
    manifest = tmp_path / "hostile.json"
    manifest.write_text(json.dumps({"version": 1, "contents": {"innocent.txt": forged}}))
    cli("import", str(manifest), "evil/x")
    log(cli.registry_url, "p/ds", file_uri(genuine))
    m = mount_factory(extra_args=("--allow-other",))
    with pytest.raises(OSError) as info:
        (m.path / "evil/x/v0/innocent.txt").read_bytes()
    assert info.value.errno == errno.EIO
    assert "MD5 differs" in m.log()
    assert (m.path / "p/ds/v0/genuine").read_bytes() == b"logged for real"
