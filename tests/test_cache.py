"""The block cache and the reader without a mount: keys, checksums, sharing, eviction, single-flight."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from refmount import cache as cache_module
from refmount import directio, stores
from refmount import reader as reader_module
from refmount.buffers import Block, BufferPool, aligned_buffer
from refmount.cache import INLINE_MAX, BlockCache, block_key
from refmount.errors import ChangedObject, StoreError, Unpinned
from refmount.manifest import CONTENT_MD5, Entry
from refmount.prefetch import Stream
from refmount.reader import Reader, open_reader
from refmount.writeback import Writeback
from tests.blocks import overwrite_block, stored_block

BLOCK = 1024  # small blocks keep the tests fast; the logic does not depend on the size


@dataclass
class FakeStore:
    """Serves ``objects`` by reference and records every read the reader makes."""

    objects: dict[str, bytes]
    calls: list[tuple[str, int, int]] = field(default_factory=list)
    gate: threading.Event | None = None  # when set up, reads wait for it (in the worker thread)
    fail: Exception | None = None

    def read(self, entry: Entry, offset: int, length: int) -> bytes:
        self.calls.append((entry.ref, offset, length))
        if self.gate is not None:
            assert self.gate.wait(30), "the test never opened the gate"
        if self.fail is not None:
            raise self.fail
        return self.objects[entry.ref][offset : offset + length]

    read_into = stores.Store.read_into  # the default every store has: its read(), copied into the buffers


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore({})
    monkeypatch.setattr(stores, "store_for", lambda ref: fake)
    return fake


def add(store: FakeStore, name: str, data: bytes, version: str = "1") -> Entry:
    ref = f"s3://bucket/{name}"
    store.objects[ref] = data
    digest = hashlib.md5(data).hexdigest()
    return Entry(name, ref, digest, len(data), {"etag": digest, "versionID": version})


def run(fn: Callable[[Reader], object], cache: BlockCache | None, **kw: int) -> object:
    """Run ``fn(reader)`` inside trio with a reader whose background work runs, as the daemon and `download` do."""

    async def main() -> object:
        async with open_reader(cache, **{"block_size": BLOCK, **kw}) as reader:
            result = await fn(reader)  # type: ignore[misc]
        return result, reader.stats

    return trio.run(main)


async def whole(reader: Reader, entry: Entry) -> bytes:
    """Every byte of ``entry``, read block by block as `download` does (the next blocks fetched ahead)."""
    stream, parts = Stream(reader, entry), []
    for offset in range(0, entry.size or 0, reader.block_size):
        with await stream.read(offset, reader.block_size) as view:
            parts.append(bytes(view))
    return b"".join(parts)


def put(cache: BlockCache, key: str, data: bytes) -> None:
    cache.put(key, Block.of(data))


def get(cache: BlockCache, key: str, length: int) -> bytes | None:
    """The cached bytes of ``key`` if it holds an intact block of ``length`` bytes."""
    block = cache.get(key, aligned_buffer(1 << 20), length)
    return None if block is None else bytes(block.view())


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[BlockCache]:
    c = BlockCache(tmp_path / "cache", 1 << 30)
    yield c
    c.close()


# -- keys and the disk cache ---------------------------------------------------------------------------
def test_keys_follow_the_pinned_identity_not_the_artifact_path() -> None:
    e = Entry("a/x.bin", "s3://b/k", "etag1", 10, {"etag": "etag1", "versionID": "v1"})
    same_object_elsewhere = Entry("other/path.bin", "s3://b/k", "etag1", 10, {"etag": "etag1", "versionID": "v1"})
    assert block_key(e, BLOCK, 0) == block_key(same_object_elsewhere, BLOCK, 0)
    others = [
        Entry("a/x.bin", "s3://b/k", "etag1", 10, {"etag": "etag1", "versionID": "v2"}),  # another version
        Entry("a/x.bin", "s3://b/k", "etag2", 10, {"etag": "etag2", "versionID": "v1"}),  # other bytes
        Entry("a/x.bin", "s3://b/k2", "etag1", 10, {"etag": "etag1", "versionID": "v1"}),  # another object
    ]
    keys = {block_key(e, BLOCK, 0), block_key(e, BLOCK, 1), block_key(e, 2 * BLOCK, 0)}
    keys |= {block_key(o, BLOCK, 0) for o in others}
    assert len(keys) == 6


def test_one_url_with_two_content_md5s_is_two_objects() -> None:
    """ETag-less http(s) files have their URL as digest: only the content MD5 tells two versions apart."""
    url = "http://h/c.json"
    first, second = (Entry("c.json", url, url, 7, {CONTENT_MD5: md5}) for md5 in ("A" * 22 + "==", "B" * 22 + "=="))
    assert block_key(first, BLOCK, 0) != block_key(second, BLOCK, 0)


def test_cache_dir_is_private_and_blocks_round_trip(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path / "new" / "cache", 1 << 30)
    large = os.urandom(INLINE_MAX + 1)
    try:
        assert stat.S_IMODE((tmp_path / "new" / "cache").stat().st_mode) == 0o700
        assert get(cache, "k", 11) is None
        put(cache, "k", b"block bytes")
        put(cache, "empty", b"")
        put(cache, "large", large)
        assert get(cache, "k", 11) == b"block bytes" and get(cache, "empty", 0) == b""
        assert get(cache, "large", len(large)) == large
        assert cache.block_file("k") is None and stored_block(cache, "k") == b"block bytes"  # small: inline
        block = cache.block_file("large")
        assert block is not None and block.read_bytes() == large  # large: a plain file, not a SQLite row
    finally:
        cache.close()


@pytest.mark.parametrize("size", [5000, INLINE_MAX + 5000], ids=["inline", "file"])
def test_corrupt_block_is_dropped(cache: BlockCache, caplog: pytest.LogCaptureFixture, size: int) -> None:
    put(cache, "k", os.urandom(size))
    damaged = bytearray(stored_block(cache, "k"))
    damaged[4000] ^= 1
    overwrite_block(cache, "k", bytes(damaged))
    assert get(cache, "k", size) is None
    assert cache.corrupt_blocks == 1 and "corrupt cache block" in caplog.text
    assert get(cache, "k", size) is None and cache.corrupt_blocks == 1  # gone, not checked again on every read
    put(cache, "k", b"fresh")
    assert get(cache, "k", 5) == b"fresh"


@pytest.mark.parametrize("size", [3000, INLINE_MAX + 3000], ids=["inline", "file"])
def test_a_truncated_block_is_corrupt_too(cache: BlockCache, size: int) -> None:
    put(cache, "k", b"x" * size)
    overwrite_block(cache, "k", b"x" * (size - 2000))
    assert get(cache, "k", size) is None and cache.corrupt_blocks == 1


def test_a_block_of_another_length_is_corrupt_even_with_a_matching_checksum(cache: BlockCache) -> None:
    put(cache, "k", b"x" * 3000)
    assert get(cache, "k", 2999) is None and cache.corrupt_blocks == 1


def test_two_processes_share_one_cache_dir(tmp_path: Path) -> None:
    code = (
        "import sys; from refmount.buffers import Block, aligned_buffer; from refmount.cache import BlockCache\n"
        "c = BlockCache(sys.argv[1], 1 << 30); c.put('from-child', Block.of(b'written by another process'))\n"
        "got = c.get('from-parent', aligned_buffer(4096), 21)\n"
        "assert got is not None and got.view() == b'written by the parent'; c.close()"
    )
    parent = BlockCache(tmp_path / "shared", 1 << 30)
    try:
        put(parent, "from-parent", b"written by the parent")
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "shared")], check=True)
        assert get(parent, "from-child", 26) == b"written by another process"
    finally:
        parent.close()


def test_size_limit_evicts_the_oldest_stored_and_a_hit_writes_nothing(tmp_path: Path) -> None:
    limit, block = 4_000_000, 100_000  # room for about 40 blocks (diskcache also counts its index)
    cache = BlockCache(tmp_path / "small", size_limit=limit)
    try:
        put(cache, "first", os.urandom(block))
        db = tmp_path / "small" / "blocks" / "cache.db"
        before = db.stat().st_mtime_ns, (db.parent / "cache.db-wal").stat().st_size
        for _ in range(20):
            assert get(cache, "first", block) is not None
        assert (db.stat().st_mtime_ns, (db.parent / "cache.db-wal").stat().st_size) == before  # no write per hit
        for i in range(80):
            put(cache, f"b{i}", os.urandom(block))
        assert cache.volume <= limit + block
        assert get(cache, "first", block) is None  # stored first, evicted first
        assert get(cache, "b79", block) is not None and get(cache, "b0", block) is None
    finally:
        cache.close()


def test_a_batch_of_small_blocks_evicts_once_past_the_limit_and_counts_what_it_evicted(tmp_path: Path) -> None:
    limit, block, batch = 4_000_000, 100_000, 8  # inline blocks (<= 128 KiB), culled once per batch
    cache = BlockCache(tmp_path / "small", size_limit=limit)
    try:
        keys = [f"b{i}" for i in range(80)]
        for start in range(0, len(keys), batch):
            cache.put_many([(key, Block.of(os.urandom(block))) for key in keys[start : start + batch]])
            assert cache.volume <= limit + batch * block
        kept = [key for key in keys if get(cache, key, block) is not None]
        assert kept == keys[len(keys) - len(kept) :] and 0 < len(kept) < len(keys)  # the oldest stored went first
        assert cache.evictions == len(keys) - len(kept)
        assert cache.volume <= limit
    finally:
        cache.close()


def test_a_batch_of_small_blocks_is_stored_as_diskcache_would_store_it(tmp_path: Path) -> None:
    """put_many writes the rows of small blocks itself, in one statement: diskcache's own reads, counts and
    consistency check agree with them, and a block stored again keeps its row."""
    cache = BlockCache(tmp_path / "c", size_limit=1 << 30)
    try:
        blocks = {f"k{i}": os.urandom(1000 + i) for i in range(20)}
        cache.put_many([(key, Block.of(data)) for key, data in blocks.items()])
        first_stored = cache._cache.get("k0", tag=True)
        cache.put_many([(key, Block.of(data)) for key, data in list(blocks.items())[:5]])
        assert len(cache._cache) == 20 and cache._cache.check() == []  # its count and size match the rows
        assert cache._cache.get("k0", tag=True) == first_stored
        assert all(get(cache, key, len(data)) == data for key, data in blocks.items())
        assert cache.sizes() == {key: len(data) for key, data in blocks.items()}
    finally:
        cache.close()


def test_present_answers_for_many_keys_at_once(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path / "c", size_limit=1 << 30)
    try:
        stored = [f"k{i}" for i in range(0, 2 * cache_module.PRESENT_BATCH + 7, 3)]  # spread over several queries
        cache.put_many([(key, Block.of(key.encode())) for key in stored])
        cache.put(big := "large", Block.of(os.urandom(INLINE_MAX + 1)))  # a block stored as a file of its own
        asked = [f"k{i}" for i in range(2 * cache_module.PRESENT_BATCH + 7)] + [big, "absent"]
        assert cache.present(asked) == {*stored, big}
        assert cache.present([]) == set() and cache.has(big) and not cache.has("absent")
    finally:
        cache.close()


def test_the_writeback_gathers_blocks_into_batches_and_drain_writes_at_once(tmp_path: Path) -> None:
    """Blocks wait to share a batch until enough of them pile up (or ``gather_s`` passes); drain does not wait."""
    cache = BlockCache(tmp_path / "c", size_limit=1 << 30)
    buffers = BufferPool(1 << 20, spare=0)
    written: list[str] = []

    async def main() -> None:
        writeback = Writeback(cache, buffers, budget=1 << 20, gather_s=60, batch_bytes=4000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writeback.run)
            await writeback.submit("a", Block.of(os.urandom(1000)), lambda: written.append("a"))
            await writeback.submit("b", Block.of(os.urandom(1000)), lambda: written.append("b"))
            await trio.sleep(0.3)
            assert written == [] and not cache.has("a")  # gathering: 2,000 of 4,000 bytes
            await writeback.submit("c", Block.of(os.urandom(2000)), lambda: written.append("c"))
            with trio.fail_after(10):
                while len(written) < 3:
                    await trio.sleep(0.01)
            assert written == ["a", "b", "c"] and all(cache.has(key) for key in "abc")  # one batch, in order
            await writeback.submit("d", Block.of(os.urandom(1000)), lambda: written.append("d"))
            with trio.fail_after(10):
                await writeback.drain()
            assert written[-1] == "d" and cache.has("d")
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        cache.close()


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, (2 << 20) + 1])
def test_direct_io_round_trip(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = str(tmp_path / "block")
    directio.create(path, Block.of(data))
    assert os.path.getsize(path) == size and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    buffer = aligned_buffer(4 << 20)
    with open(path, "rb") as f:
        assert directio.read_into(f.fileno(), buffer) == size
    assert buffer[:size] == data
    with pytest.raises(FileExistsError):
        directio.create(path, Block.of(b"again"))  # blocks are new files, never overwritten in place


def test_a_file_longer_than_the_buffer_is_cut_short(tmp_path: Path) -> None:
    (tmp_path / "long").write_bytes(b"y" * 10_000)
    with open(tmp_path / "long", "rb") as f:
        assert directio.read_into(f.fileno(), aligned_buffer(4096)) == 4096


def test_file_systems_without_direct_io_get_ordinary_io(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open, real_fcntl = os.open, fcntl.fcntl

    def refuse_direct(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            (tmp_path / "block").touch()  # like Linux, which creates the file before refusing the flag
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    def refuse_setfl(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(directio.os, "open", refuse_direct)
    monkeypatch.setattr(directio.fcntl, "fcntl", refuse_setfl)
    directio.create(str(tmp_path / "block"), Block.of(b"x" * 5000))
    buffer = aligned_buffer(8192)
    with open(tmp_path / "block", "rb") as f:
        assert directio.read_into(f.fileno(), buffer) == 5000
    assert buffer[:5000] == b"x" * 5000


def _store_one_block(directory: Path) -> None:
    child = BlockCache(directory, 1 << 30)
    put(child, "from the child", b"child bytes")
    assert get(child, "from the child", 11) == b"child bytes"
    child.close()


def test_a_process_forked_during_a_cache_write_can_use_the_cache(
    cache: BlockCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a DataLoader forking its workers while the parent's reader stores blocks does: SQLite's lock state
    is per process, so a child forked inside a write transaction would see that lock as its own, forever."""
    writing, slow = threading.Event(), threading.Event()
    real_checksum = cache_module._checksum

    def slow_checksum(block: Block) -> str:  # runs inside put_many's write transaction
        writing.set()
        slow.wait(5)
        return real_checksum(block)

    monkeypatch.setattr(cache_module, "_checksum", slow_checksum)
    writer = threading.Thread(target=put, args=(cache, "from the parent", b"parent bytes"))
    writer.start()
    assert writing.wait(5)
    threading.Timer(0.3, slow.set).start()  # the fork below waits for the transaction to end
    child = multiprocessing.get_context("fork").Process(target=_store_one_block, args=(cache.directory,))
    child.start()
    child.join(30)  # SQLite's busy timeout is 60 s: a child stuck on an inherited lock is still waiting
    stuck = child.is_alive()
    if stuck:
        child.kill()
    writer.join()
    assert not stuck and child.exitcode == 0
    monkeypatch.undo()
    assert get(cache, "from the parent", 12) == b"parent bytes" and get(cache, "from the child", 11) == b"child bytes"


# -- the buffer pool -------------------------------------------------------------------------------------
def test_a_held_buffer_is_never_handed_out_again() -> None:
    pool = BufferPool(8192, spare=4)
    buffer = pool.take(8192)
    buffer[:5] = b"hello"
    pool.hold(buffer)  # like a reply still on its way to the kernel
    pool.release(buffer)  # the fetch that took it is done with it
    others = [pool.take(8192) for _ in range(3)]
    assert all(other is not buffer for other in others) and pool.created == 4
    assert bytes(buffer[:5]) == b"hello" and pool.holds(buffer) == 1
    pool.release(buffer)  # the last holder lets go: now it is a spare
    assert pool.holds(buffer) == 0 and pool.take(8000) is buffer and pool.created == 4


def test_releasing_more_than_was_held_is_an_error_not_a_reuse() -> None:
    pool = BufferPool(4096, spare=4)
    buffer = pool.take(4096)
    pool.release(buffer)
    with pytest.raises(RuntimeError, match="released twice"):
        pool.release(buffer)
    with pytest.raises(RuntimeError, match="nobody holds"):
        pool.hold(buffer)  # a spare: whoever still had it must not start holding it again
    assert pool.take(4096) is buffer and pool.take(4096) is not buffer  # handed out once, not twice


def test_holds_from_other_threads_are_counted_exactly() -> None:
    pool = BufferPool(4096, spare=1)
    buffer = pool.take(4096)
    for _ in range(8000):
        pool.hold(buffer)
    threads = [threading.Thread(target=lambda: [pool.release(buffer) for _ in range(1000)]) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pool.holds(buffer) == 1  # the taker's own


def test_the_pool_keeps_at_most_spare_unheld_buffers() -> None:
    pool = BufferPool(4096, spare=2)
    taken = [pool.take(4096) for _ in range(5)]
    for buffer in taken:
        pool.release(buffer)
    again = [pool.take(4096) for _ in range(4)]
    assert pool.created == 7  # two spares reused, two new
    assert sum(any(b is t for t in taken) for b in again) == 2


def test_a_block_size_of_part_of_a_page_is_still_pooled() -> None:
    pool = BufferPool(1000, spare=4)  # buffers are whole pages: 4096 bytes
    buffer = pool.take(1000)
    pool.release(buffer)
    assert len(pool.take(1000)) == 4096 and pool.created == 1


def test_small_blocks_get_small_buffers_outside_the_pool() -> None:
    pool = BufferPool(8 << 20, spare=4)
    small = pool.take(5000)
    assert len(small) == 8192 and pool.created == 0  # whole pages, not a full-size buffer
    pool.hold(small)  # holds of buffers outside the pool mean nothing: they are never reused
    pool.release(small)
    pool.release(small)
    assert pool.holds(small) == 0 and pool.take(5000) is not small
    big = pool.take(8 << 20)
    assert len(big) == 8 << 20 and pool.created == 1


def test_the_reader_gives_back_every_buffer_it_took() -> None:
    """Fetches, memory, cache writes and leases all let go: with no reader left, no buffer is held."""
    entry_data = os.urandom(5 * BLOCK)
    fake = FakeStore({})
    entry = add(fake, "x.bin", entry_data)

    async def scenario(tmp: Path) -> tuple[BufferPool, list[int]]:
        cache = BlockCache(tmp, 1 << 30)
        async with open_reader(cache, block_size=BLOCK, memory_bytes=2 * BLOCK) as reader:
            # Leased first, so that it is fetched from the store into a pool buffer whatever the timing (read
            # after the others, it could have left memory for the cache, whose small blocks are plain bytes).
            lease = await reader.lease(entry, 4 * BLOCK, 10)
            held = [reader.buffers.holds(lease.view.obj)]  # type: ignore[arg-type]
            lease.release()
            assert await whole(reader, entry) == entry_data
        cache.close()
        return reader.buffers, held

    import tempfile

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(stores, "store_for", lambda ref: fake)
        pool, held = trio.run(scenario, Path(tmp))
    assert held[0] >= 1  # while leased
    assert pool._holds == {}


# -- the reader ------------------------------------------------------------------------------------------
def test_reads_return_exact_ranges(store: FakeStore, cache: BlockCache) -> None:
    data = os.urandom(3 * BLOCK + 100)
    entry = add(store, "big.bin", data)
    cases = [(0, 10), (BLOCK - 5, 10), (0, len(data) + 50), (2 * BLOCK, 3 * BLOCK), (len(data) - 1, 5),
             (len(data), 10), (len(data) + 100, 10), (BLOCK, 0)]  # fmt: skip

    async def reads(reader: Reader) -> list[bytes]:
        return [await reader.read(entry, off, n) for off, n in cases]

    got, _ = run(reads, cache)  # type: ignore[misc]
    assert got == [data[off : off + n] for off, n in cases]


def test_unpinned_entries_are_never_read(store: FakeStore, cache: BlockCache) -> None:
    """Not from the store, nor from a block the cache may hold under the entry's key."""
    entry = add(store, "loc.bin", b"whatever is there now")
    entry = Entry(entry.path, entry.ref, entry.ref, entry.size)  # digest = ref, no version: a location
    put(cache, block_key(entry, BLOCK, 0), b"whatever is there now")

    async def read(reader: Reader) -> str:
        try:
            return (await reader.read(entry, 0, 5)).decode()
        except Unpinned as exc:
            return str(exc)

    got, _ = run(read, cache)  # type: ignore[misc]
    assert got.startswith("loc.bin: reference s3://bucket/loc.bin has nothing to pin its bytes by") and not store.calls


def test_small_files_are_one_whole_request(store: FakeStore) -> None:
    entry = add(store, "small.txt", b"hello, world")

    async def reads(reader: Reader) -> list[bytes]:
        return [await reader.read(entry, 7, 5), await reader.read(entry, 0, 5)]

    got, stats = run(reads, None)  # type: ignore[misc]
    assert got == [b"world", b"hello"]
    assert store.calls == [(entry.ref, 0, len(b"hello, world"))] and stats.fetches == 1


def test_concurrent_reads_of_one_block_make_one_fetch(store: FakeStore) -> None:
    entry = add(store, "x.bin", os.urandom(BLOCK))
    store.gate = threading.Event()

    async def many(reader: Reader) -> list[bytes]:
        results: list[bytes] = []

        async def one() -> None:
            results.append(await reader.read(entry, 0, BLOCK))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()  # all ten are waiting on the one fetch
            store.gate.set()  # type: ignore[union-attr]
        return results

    got, stats = run(many, None)  # type: ignore[misc]
    assert got == [store.objects[entry.ref]] * 10
    assert len(store.calls) == 1 and stats.fetches == 1


def test_store_calls_do_not_block_the_event_loop(store: FakeStore) -> None:
    """The store waits for a trio task to open its gate: were the fetch on the trio thread, this would hang."""
    entry = add(store, "x.bin", b"data")
    store.gate = threading.Event()

    async def read_while_loop_runs(reader: Reader) -> bytes:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, store.gate.set)  # type: ignore[union-attr]
            with trio.fail_after(30):  # a deadlock guard, not a timing assertion
                return await reader.read(entry, 0, 4)

    got, _ = run(read_while_loop_runs, None)  # type: ignore[misc]
    assert got == b"data"


def test_failures_reach_every_waiter_and_are_not_cached(store: FakeStore) -> None:
    entry = add(store, "x.bin", b"logged")
    store.fail = ChangedObject("x.bin: reference s3://bucket/x.bin no longer matches the logged version")
    store.gate = threading.Event()

    async def failing(reader: Reader) -> list[str]:
        errors: list[str] = []

        async def one() -> None:
            try:
                await reader.read(entry, 0, 6)
            except ChangedObject as exc:
                errors.append(str(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()  # type: ignore[union-attr]
        store.fail = None
        errors.append((await reader.read(entry, 0, 6)).decode())  # the next read asks the store again
        return errors

    got, stats = run(failing, None)  # type: ignore[misc]
    assert len(got) == 4 and "no longer matches" in got[0] and got[3] == "logged"
    assert len(store.calls) == 2 and stats.errors == 1


def test_a_short_answer_from_a_store_is_an_error(store: FakeStore) -> None:
    entry = add(store, "x.bin", b"0123456789")
    store.objects[entry.ref] = b"01234"  # the store returns fewer bytes than the entry promises

    async def read(reader: Reader) -> bytes:
        return await reader.read(entry, 0, 10)

    with pytest.RaisesGroup(pytest.RaisesExc(StoreError, match="returned 5 bytes")):  # out of the nursery
        run(read, None)


def test_a_cancelled_fetch_does_not_fail_the_other_readers(store: FakeStore) -> None:
    """The reader that started a fetch is cancelled before it ran: the others waiting for it fetch themselves."""
    a, b = add(store, "a.bin", b"aaaa"), add(store, "b.bin", b"bbbb")
    store.gate = threading.Event()

    async def scenario(reader: Reader) -> list[bytes]:
        got: list[bytes] = []
        owner = trio.CancelScope()

        async def own_b() -> None:
            with owner:
                await reader.block(b, 0)

        async def wait_for_b() -> None:
            got.append(await reader.read(b, 0, 4))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.block, a, 0)  # holds the only fetch slot until the gate opens
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(own_b)  # starts b's fetch, queued for the slot
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(wait_for_b)  # waits for that fetch
            await trio.testing.wait_all_tasks_blocked()
            owner.cancel()
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()  # type: ignore[union-attr]
        return got

    got, _ = run(scenario, None, max_fetches=1)  # type: ignore[misc]
    assert got == [b"bbbb"]


def test_remount_reads_from_disk_not_the_store(store: FakeStore, tmp_path: Path) -> None:
    data = os.urandom(2 * BLOCK + 7)
    entry = add(store, "x.bin", data)

    counts = []
    for _ in range(2):  # a fresh reader and cache object each time, like a new daemon
        cache = BlockCache(tmp_path / "cache", 1 << 30)
        got, stats = run(lambda reader: whole(reader, entry), cache)  # type: ignore[misc]
        cache.close()
        assert got == data
        counts.append((len(store.calls), stats.fetches, stats.disk_hits))
    assert counts[0][1:] == (3, 0) and counts[1] == (counts[0][0], 0, 3)  # the second reader never asked the store


def test_a_small_cached_block_is_read_without_a_worker_thread(store: FakeStore, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    small, large = add(store, "small.bin", os.urandom(700)), add(store, "large.bin", os.urandom(INLINE_MAX + 1))
    threads = []
    real = trio.to_thread.run_sync

    async def counted(fn: Callable[..., object], *args: object, **kw: object) -> object:
        threads.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kw)

    async def both(reader: Reader) -> list[bytes]:
        return [await reader.read(small, 0, 700), await reader.read(large, 0, INLINE_MAX + 1)]

    cache = BlockCache(tmp_path / "cache", 1 << 30)
    run(both, cache, block_size=1 << 20)  # cold: fetched, then written to the cache
    monkeypatch.setattr(trio.to_thread, "run_sync", counted)
    got, stats = run(both, cache, block_size=1 << 20)  # type: ignore[misc]
    cache.close()
    assert got == [store.objects[small.ref], store.objects[large.ref]] and stats.disk_hits == 2
    assert threads == ["_load"]  # the large block's file is read in a thread; the small one is not
    assert len(store.calls) == 2  # the second reader asked the store nothing


def test_corrupt_block_is_fetched_again(store: FakeStore, cache: BlockCache) -> None:
    data = os.urandom(BLOCK)
    entry = add(store, "x.bin", data)

    async def read(reader: Reader) -> bytes:
        return await reader.read(entry, 0, BLOCK)

    run(read, cache)
    overwrite_block(cache, block_key(entry, BLOCK, 0), b"\0" * BLOCK)
    got, stats = run(read, cache)  # type: ignore[misc]
    assert got == data and stats.fetches == 1 and cache.corrupt_blocks == 1


async def calls_reach(store: FakeStore, count: int) -> list[tuple[int, int]]:
    """The (offset, length) of the store's reads once there are ``count`` of them (background fetches)."""
    with trio.fail_after(30):  # a deadlock guard, not a timing assertion
        while len(store.calls) < count:
            await trio.sleep(0.01)
    return sorted((off, n) for _, off, n in store.calls)


@pytest.fixture
def runs_of_four(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readahead asks for up to four blocks per request here, whatever the daemon is tuned to."""
    monkeypatch.setattr(reader_module, "MAX_BLOCKS_PER_REQUEST", 4)


@pytest.mark.usefixtures("runs_of_four")
def test_prefetch_fetches_ahead_in_the_background(store: FakeStore) -> None:
    entry = add(store, "x.bin", os.urandom(6 * BLOCK))

    async def sequential(reader: Reader) -> None:
        reader.prefetch(entry, 1, 3)
        await reader.read(entry, 0, BLOCK)
        assert await calls_reach(store, 2) == [(0, BLOCK), (BLOCK, 3 * BLOCK)]  # blocks 1-3: one request
        for i in range(1, 4):
            await reader.read(entry, i * BLOCK, BLOCK)  # in memory or being fetched: no new store call
        assert len(store.calls) == 2
        reader.prefetch(entry, 5, 10)  # clipped at the end of the object
        assert (await calls_reach(store, 3))[-1] == (5 * BLOCK, BLOCK)

    _, stats = run(sequential, None)  # type: ignore[misc]
    assert stats.fetches == 5


@pytest.mark.usefixtures("runs_of_four")
def test_prefetch_requests_are_runs_of_missing_blocks(store: FakeStore) -> None:
    entry = add(store, "x.bin", os.urandom(10 * BLOCK - 1))

    async def scattered(reader: Reader) -> bytes:
        await reader.read(entry, 2 * BLOCK, 1)  # block 2 is in memory: runs form around it
        reader.prefetch(entry, 0, 10)
        calls = await calls_reach(store, 4)
        assert calls == [(0, 2 * BLOCK), (2 * BLOCK, BLOCK), (3 * BLOCK, 4 * BLOCK), (7 * BLOCK, 3 * BLOCK - 1)]
        return await whole(reader, entry)

    got, _ = run(scattered, None)  # type: ignore[misc]
    assert got == store.objects[entry.ref] and len(store.calls) == 4


def test_a_seek_cancels_the_readahead_under_way_and_its_buffers_come_back(store: FakeStore) -> None:
    entry = add(store, "x.bin", os.urandom(20 * BLOCK))
    store.gate = threading.Event()

    async def scenario(reader: Reader) -> tuple[bool, bool, int]:
        stream = Stream(reader, entry)
        stream.advance(0, BLOCK)  # sequential from the start: block 1 is fetched ahead
        await calls_reach(store, 1)  # ... and its store read is under way (held at the gate)
        ahead = block_key(entry, BLOCK, 1) in reader._flights
        stream.advance(10 * BLOCK, BLOCK)  # a seek
        await trio.testing.wait_all_tasks_blocked()
        abandoned = block_key(entry, BLOCK, 1) not in reader._flights
        store.gate.set()  # type: ignore[union-attr]  # the abandoned thread finishes and lets its buffer go
        with trio.fail_after(30):  # a deadlock guard, not a timing assertion
            while reader.buffers._holds:
                await trio.sleep(0.01)
        return ahead, abandoned, len(store.calls)

    (ahead, abandoned, calls), _ = run(scenario, None)  # type: ignore[misc]
    assert ahead and abandoned and calls == 1  # nothing was fetched ahead of the new place yet


def test_a_failing_cache_write_does_not_stop_reads(
    store: FakeStore, cache: BlockCache, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    entries = [add(store, f"f{i}.bin", os.urandom(100)) for i in range(3)]

    def broken(blocks: object) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(cache, "put_many", broken)

    async def reads(reader: Reader) -> list[bytes]:
        return [await reader.read(entry, 0, 100) for entry in entries]

    got, _ = run(reads, cache)  # type: ignore[misc]
    assert got == [store.objects[e.ref] for e in entries]
    assert "could not store" in caplog.text and "malformed" in caplog.text
