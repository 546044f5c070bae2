"""The file system without a kernel: requests driven in process against a real SQLite registry and real files.

What only the kernel shows (caching, no-open reads, unmounting) is tested through real mounts in test_mount.py.
"""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

import refmount
from refmount.cache import BlockCache
from refmount.fs.core import DIR, FILE, IMMUTABLE_TTL, SYMLINK, Attributes, Filesystem, FsError
from refmount.fs.namespace import Namespace
from refmount.fs.nodes import ROOT_INODE
from refmount.reader import open_reader
from refmount.registry import open_registry
from refmount.stores.file import file_uri

T = TypeVar("T")
FILES = {"train/a.png": b"aaaa", "train/b.png": b"bb", "labels.csv": b"x,y\n"}


@pytest.fixture
def logged(tmp_path: Path, registry_url: str) -> str:
    for seed in range(2):
        root = tmp_path / f"src{seed}"
        for rel, data in FILES.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data + bytes([seed]))
        art = refmount.Artifact("ds", type="dataset")
        art.add_reference(file_uri(root))
        refmount.log_artifact(art, project="p", registry=registry_url, aliases=["best"] if seed == 0 else [])
    return registry_url


@pytest.fixture
def run(logged: str, tmp_path: Path) -> Iterator[Callable[[Callable[[Filesystem], Awaitable[T]]], T]]:
    """``run(fn)`` runs ``await fn(fs)`` in trio with a file system over the logged registry."""
    registry = open_registry(logged, index_dir=tmp_path / "indexes")
    cache = BlockCache(tmp_path / "cache", 1 << 30)

    def go(fn: Callable[[Filesystem], Awaitable[T]]) -> T:
        async def main() -> T:
            async with open_reader(cache) as reader:
                return await fn(Filesystem(Namespace(registry, alias_ttl=2.0), reader))

        return trio.run(main)

    yield go
    cache.close()
    registry.close()


async def walk(fs: Filesystem, path: str) -> Attributes:
    attributes = await fs.getattr(ROOT_INODE)
    for name in filter(None, path.split("/")):
        attributes = await fs.lookup(attributes.inode, name)
    return attributes


async def names(fs: Filesystem, inode: int) -> list[str]:
    """A whole listing, batch by batch, as the kernel asks for it, without the ``.`` and ``..`` it starts with."""
    out, after = [], 0
    while batch := await fs.listdir(inode, after):
        out += [name for name, _, _ in batch]
        after = batch[-1][2]
    assert out[:2] == [".", ".."], out
    return out[2:]


async def read(fs: Filesystem, path: str, offset: int = 0, size: int = 1 << 20) -> bytes:
    lease = await fs.read((await walk(fs, path)).inode, offset, size)
    with lease as view:
        return bytes(view)


def test_the_tree_its_kinds_and_timeouts(run: Any) -> None:
    async def scenario(fs: Filesystem) -> dict[str, Any]:
        artifact = await walk(fs, "p/ds")
        return {
            "root": await names(fs, ROOT_INODE),
            "artifact": await names(fs, artifact.inode),
            "version": await names(fs, (await walk(fs, "p/ds/v1")).inode),
            "train": await names(fs, (await walk(fs, "p/ds/v1/train")).inode),
            "kinds": [
                (await walk(fs, path)).mode for path in ("p", "p/ds", "p/ds/v0", "p/ds/latest", "p/ds/v0/labels.csv")
            ],
            "file": await walk(fs, "p/ds/v0/train/a.png"),
            "alias_ttl": (await walk(fs, "p/ds/best")).ttl,
            "version_ttl": (await walk(fs, "p/ds/v0")).ttl,
            "inside_version_ttl": (await walk(fs, "p/ds/v0/train")).ttl,
        }

    got = run(scenario)
    assert got["root"] == ["p"] and got["artifact"] == ["v0", "v1", "best", "latest"]
    assert sorted(got["version"]) == ["labels.csv", "train"] and sorted(got["train"]) == ["a.png", "b.png"]
    assert got["kinds"] == [DIR, DIR, DIR, SYMLINK, FILE]
    assert got["file"].size == 5 and got["file"].ttl == IMMUTABLE_TTL
    # `vN` itself may be deleted or expire: asked again as aliases are; what is inside it never changes
    assert got["alias_ttl"] == 2.0 and got["version_ttl"] == 2.0 and got["inside_version_ttl"] == IMMUTABLE_TTL


def test_every_listing_starts_with_dot_and_dotdot_naming_the_directory_and_its_parent(run: Any) -> None:
    paths = ["", "p", "p/ds", "p/ds/v1", "p/ds/v1/train"]  # each is the parent of the next; the root its own

    async def scenario(fs: Filesystem) -> tuple[list[int], list[tuple[int, int]], list[list[str]]]:
        inodes = [(await walk(fs, path)).inode for path in paths]
        dots = []
        for inode in inodes:
            first = await fs.listdir(inode, 0)
            assert [name for name, _, _ in first[:2]] == [".", ".."]
            dots.append((first[0][1].inode, first[1][1].inode))
        version = inodes[3]
        whole = await fs.listdir(version, 0)
        # Resuming at each cookie gives what followed it: the dots' cookies fit the scheme of the rest.
        resumed = [[name for name, _, _ in await fs.listdir(version, cookie)] for _, _, cookie in whole]
        return inodes, dots, [[name for name, _, _ in whole], *resumed]

    inodes, dots, (whole, *resumed) = run(scenario)
    assert dots == [(inodes[0], inodes[0]), *zip(inodes[1:], inodes, strict=False)]
    assert sorted(whole) == [".", "..", "labels.csv", "train"]
    assert resumed == [whole[i:] for i in range(1, len(whole) + 1)]


def test_reads_return_the_logged_bytes_of_each_version(run: Any) -> None:
    async def scenario(fs: Filesystem) -> list[bytes]:
        return [await read(fs, "p/ds/v0/train/a.png"), await read(fs, "p/ds/v1/train/a.png"),
                await read(fs, "p/ds/latest/labels.csv".replace("latest", await fs.readlink(
                    (await walk(fs, "p/ds/latest")).inode))), await read(fs, "p/ds/v1/labels.csv", 2, 2)]  # fmt: skip

    assert run(scenario) == [b"aaaa\0", b"aaaa\1", b"x,y\n\1", b"y\n"]


def test_misses_are_negative_entries_inside_versions_and_short_lived_above(run: Any) -> None:
    async def scenario(fs: Filesystem) -> list[Attributes]:
        return [await walk(fs, "p/ds/v0/nope"), await walk(fs, "p/ds/v7"), await walk(fs, "nope")]

    inside, above, top = run(scenario)
    assert inside.inode == 0 and inside.ttl == IMMUTABLE_TTL
    assert above.inode == 0 and above.ttl == 2.0 and top.inode == 0


def test_each_request_on_the_wrong_kind_of_node_is_its_errno(run: Any) -> None:
    async def scenario(fs: Filesystem) -> list[int]:
        file = (await walk(fs, "p/ds/v0/labels.csv")).inode
        link = (await walk(fs, "p/ds/latest")).inode
        directory = (await walk(fs, "p/ds/v0")).inode
        calls = [fs.lookup(file, "x"), fs.readlink(file), fs.opendir(file), fs.read(directory, 0, 1),
                 fs.read(link, 0, 1), fs.getattr(12345), fs.lookup(link, "x")]  # fmt: skip
        codes = []
        for call in calls:
            try:
                await call
                codes.append(0)
            except FsError as exc:
                codes.append(exc.errno)
        return codes

    assert run(scenario) == [errno.ENOTDIR, errno.EINVAL, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.ENOENT,
                             errno.ENOTDIR]  # fmt: skip


def test_an_alias_is_a_new_inode_for_each_target(run: Any, logged: str) -> None:
    async def scenario(fs: Filesystem) -> tuple[int, str, int, str]:
        before = await walk(fs, "p/ds/best")
        text_before = await fs.readlink(before.inode)
        await trio.to_thread.run_sync(lambda: open_registry(logged).set_alias("p", "ds", "best", 1))
        await trio.sleep(2.1)  # alias_ttl
        after = await walk(fs, "p/ds/best")
        return before.inode, text_before, after.inode, await fs.readlink(after.inode)

    before, text_before, after, text_after = run(scenario)
    assert (text_before, text_after) == ("v0", "v1")
    assert before != after  # a cached link text is never shown for the moved alias


def test_a_changed_source_is_eio_with_a_message_naming_the_version_and_path(run: Any, tmp_path: Path) -> None:
    (tmp_path / "src0" / "labels.csv").write_bytes(b"changed!")

    async def scenario(fs: Filesystem) -> FsError:
        with pytest.raises(FsError) as info:
            await read(fs, "p/ds/v0/labels.csv")
        return info.value

    error = run(scenario)
    assert error.errno == errno.EIO and error.message is not None
    assert error.message.startswith("p/ds:v0/labels.csv: ") and "no longer matches" in error.message


def test_names_logging_would_refuse_are_neither_listed_nor_resolved(
    run: Any, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = sqlite3.connect(logged.removeprefix("sqlite://"))
    db.execute("UPDATE nodes SET name = 'new\nline' WHERE name = 'labels.csv'")
    db.execute("UPDATE nodes SET name = ? WHERE name = 'a.png'", ("x" * 256,))
    db.execute("UPDATE nodes SET name = 'tab\there' WHERE name = 'b.png'")
    db.execute("INSERT INTO artifacts (project_id, name, type) SELECT project_id, 'bad name', type FROM artifacts")
    db.commit()
    db.close()

    async def scenario(fs: Filesystem) -> tuple[list[str], list[str], list[str], list[int]]:
        project = (await walk(fs, "p")).inode
        version = (await walk(fs, "p/ds/v0")).inode
        train = (await walk(fs, "p/ds/v0/train")).inode
        misses = [(await fs.lookup(version, "new\nline")).inode, (await fs.lookup(train, "tab\there")).inode,
                  (await fs.lookup(project, "bad name")).inode]  # fmt: skip
        return await names(fs, project), await names(fs, version), await names(fs, train), misses

    artifacts, version, train, misses = run(scenario)
    assert artifacts == ["ds"] and version == ["train"] and train == [] and misses == [0, 0, 0]
    assert "not showing the invalid name 'new\\nline'" in caplog.text
    assert caplog.text.count("'tab\\there'") == 1  # reported once, however often it is met


def test_stats_and_xattrs(run: Any) -> None:
    async def scenario(fs: Filesystem) -> tuple[dict[str, Any], list[str], bytes]:
        await read(fs, "p/ds/v0/labels.csv")
        file = (await walk(fs, "p/ds/v0/labels.csv")).inode
        stats = json.loads(await fs.getxattr(ROOT_INODE, "user.refmount.stats"))
        return stats, await fs.listxattr(file), await fs.getxattr(file, "user.refmount.ref")

    stats, listed, ref = run(scenario)
    assert stats["reads"] == 1 and stats["read_bytes"] == 5 and stats["fetches"] == 1
    assert listed == ["user.refmount.ref", "user.refmount.digest"]
    assert ref.decode().startswith("file://") and ref.decode().endswith("/src0/labels.csv")


def test_a_small_file_is_fetched_when_it_is_looked_up(run: Any) -> None:
    """The read that follows a lookup (after the open and, from Python, an isatty ioctl) finds it arriving."""

    async def scenario(fs: Filesystem) -> tuple[int, int, bytes, int]:
        attributes = await walk(fs, "p/ds/v1/labels.csv")
        with trio.fail_after(30):  # a deadlock guard, not a timing assertion
            while fs.reader.stats.fetches == 0:
                await trio.sleep(0.01)
        fetched, requests = fs.reader.stats.fetches, fs.reader.stats.requests
        with await fs.read(attributes.inode, 0, 100) as view:
            return fetched, requests, bytes(view), fs.reader.stats.fetches

    fetched, requests, data, fetched_after = run(scenario)
    assert (fetched, requests) == (1, 0) and data == b"x,y\n\1" and fetched_after == 1
