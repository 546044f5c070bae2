"""`refmount cache status` and `cache evict`, and the sweep gc runs: which cached blocks belong to which versions,
matched against a real cache directory (block files counted on disk) and beside a live mount."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import trio

from refmount import cli as cli_module
from refmount.buffers import Block
from refmount.cache import INLINE_MAX, BlockCache
from refmount.cachemap import Removed, sweep, version_keys
from refmount.registry import Registry, open_registry
from refmount.stores.file import file_uri
from refmount.warmup import prefetch
from tests.conftest import Cli
from tests.server_http import StallingServer
from tests.test_mount import log, make_tree
from tests.test_warmup import cache_dir as cache_dir  # the fixture: the CLI's cache, also mount_factory's
from tests.test_warmup import read_through_a_mount


def block_files(cache_dir: Path) -> int:
    """Blocks stored as files of their own (those over INLINE_MAX; smaller ones live in diskcache's index)."""
    return sum(1 for p in (cache_dir / "blocks").rglob("*") if p.is_file() and not p.name.startswith("cache.db"))


def status(cli: Cli, *args: str) -> dict[str, Any]:
    return cli("cache", "status", "--json", *args).json()


def one_line_error(result: Any, message: str) -> None:
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not result.out


@pytest.fixture
def registry(registry_url: str) -> Iterator[Registry]:
    reg = open_registry(registry_url, create=True)
    yield reg
    reg.close()


# -- sweep: the library function gc calls --------------------------------------------------------------------


def test_sweep_keeps_the_blocks_of_kept_versions_and_removes_the_rest(tmp_path: Path, registry_url: str,
                                                                      registry: Registry) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    big = 3 * INLINE_MAX  # one block, stored as a file
    (src / "shared.bin").write_bytes(os.urandom(big))
    (src / "old.bin").write_bytes(os.urandom(big))
    (src / "small.txt").write_bytes(b"inline")
    cache = BlockCache(tmp_path / "cache", 1 << 30)
    try:
        log(registry_url, "p/ds", file_uri(src))
        v0 = registry.resolve("p", "ds", "v0")
        assert trio.run(lambda: prefetch(registry, v0, cache)).fetched == 3
        (src / "old.bin").unlink()
        (src / "new.bin").write_bytes(os.urandom(big))
        log(registry_url, "p/ds", file_uri(src))  # v1 shares shared.bin and small.txt with v0
        v1 = registry.resolve("p", "ds", "v1")
        assert trio.run(lambda: prefetch(registry, v1, cache)).fetched == 1
        cache.put("a key of no version", Block.of(b"stale"))  # say, a block of an older key format
        assert block_files(tmp_path / "cache") == 3  # shared.bin, old.bin, new.bin
        assert len(cache.sizes()) == 5

        assert sweep(cache, [v1], registry, dry_run=True) == Removed(2, big + len(b"stale"))
        assert len(cache.sizes()) == 5 and block_files(tmp_path / "cache") == 3  # a dry run removes nothing

        assert sweep(cache, [v1, v1], registry) == Removed(2, big + len(b"stale"))
        assert block_files(tmp_path / "cache") == 2  # old.bin's file is gone
        assert set(cache.sizes()) == {key for key, _ in version_keys(registry, v1)}
        kept = trio.run(lambda: prefetch(registry, v1, cache))
        assert (kept.fetched, kept.cached) == (0, 3)  # every kept block is still there, whole

        assert sweep(cache, [v1], registry) == Removed(0, 0)
        assert sweep(cache, [], registry) == Removed(3, 2 * big + len(b"inline"))
        assert block_files(tmp_path / "cache") == 0 and cache.sizes() == {}
    finally:
        cache.close()


def test_gc_sweeps_the_blocks_only_deleted_versions_used(cli: Cli, registry_url: str, tmp_path: Path,
                                                         cache_dir: Path) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(os.urandom(3 * INLINE_MAX))  # each one block, stored as a file
    (src / "old.bin").write_bytes(os.urandom(3 * INLINE_MAX))
    log(registry_url, "p/ds", file_uri(src))
    cli("cache", "prefetch", "p/ds:v0", "-q")
    (src / "old.bin").unlink()
    (src / "new.bin").write_bytes(os.urandom(3 * INLINE_MAX))
    log(registry_url, "p/ds", file_uri(src))
    cli("cache", "prefetch", "p/ds:v1", "-q")
    assert block_files(cache_dir) == 3
    assert "removed 1 cache block" not in cli("gc").out and block_files(cache_dir) == 3  # every block in use

    cli("delete", "p/ds:v0")
    dry = cli("gc", "--dry-run")
    assert "would remove 1 cache block (384.0 KiB) of objects no remaining version references" in dry.out
    assert block_files(cache_dir) == 3
    assert cli("gc", "--json").json()["cache_blocks"] == {"blocks": 1, "bytes": 3 * INLINE_MAX}
    assert block_files(cache_dir) == 2  # old.bin's block went; shared.bin's stays, v1 references it
    assert status(cli, "p/ds:v1")["versions"][0]["percent"] == 100


# -- status and evict through the CLI ------------------------------------------------------------------------


def test_status_and_evict_follow_what_is_cached(cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path) -> None:
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    total = sum(map(len, tree.values()))
    one_line_error(cli("cache", "status", ok=False), f"no block cache in {cache_dir}")
    one_line_error(cli("cache", "evict", "p/ds", ok=False), f"no block cache in {cache_dir}")
    assert not cache_dir.exists()  # neither made one

    cli("cache", "prefetch", "p/ds", "--path", "train/", "-q")
    train = len(tree["train/0001.png"]) + len(tree["train/deep/er/x.bin"])
    shown = status(cli)
    assert (shown["directory"], shown["blocks"], shown["block_bytes"]) == (str(cache_dir), 2, train)
    assert shown["unreferenced"] == {"blocks": 0, "bytes": 0}
    [version] = shown["versions"]
    assert (version["name"], version["blocks"], version["cacheable_bytes"]) == ("p/ds:v0", 6, total)
    assert (version["cached_blocks"], version["cached_bytes"]) == (2, train)
    assert version["percent"] == pytest.approx(100 * train / total)

    cli("cache", "prefetch", "p/ds", "-q")
    assert status(cli, "p/ds:latest")["versions"][0]["percent"] == 100
    text = cli("cache", "status").out.splitlines()  # piped: a summary line, then tab-separated rows
    assert text[0] == f"cache {cache_dir}: {text[0].split(': ', 1)[1]}" and ", 6 blocks (" in text[0]
    assert text[1:] == ["version\taliases\tfiles\tcacheable\tcached\t%", f"p/ds:v0\tlatest\t5\t{total}\t{total}\t100.0"]

    evicted = cli("cache", "evict", "p/ds", "--path", "train/deep/")
    assert evicted.out == "evicted 1 block (2.9 KiB) of p/ds:v0\n"
    assert status(cli, "p/ds")["versions"][0]["cached_blocks"] == 5
    assert block_files(cache_dir) == 2  # big.bin's two full blocks (its short last one is inline)
    assert cli("cache", "evict", "p/ds:v0").out == f"evicted 5 blocks ({(total - 3000) / 2**20:.1f} MiB) of p/ds:v0\n"
    assert status(cli)["blocks"] == 0 and block_files(cache_dir) == 0
    assert cli("cache", "evict", "p/ds").out == "evicted 0 blocks (0 B) of p/ds:v0\n"


def test_status_counts_shared_blocks_for_each_version_and_blocks_of_none(
    cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a" * 100)
    log(registry_url, "p/one", file_uri(src))
    log(registry_url, "q/two", file_uri(src))  # another artifact, the same object
    (src / "b.txt").write_bytes(b"b" * 50)
    log(registry_url, "p/one", file_uri(src))
    cli("cache", "prefetch", "p/one:v1", "-q")
    cache = BlockCache(cache_dir, None, create=False)
    cache.put("a key of no version", Block.of(b"stale!"))
    cache.close()
    shown = status(cli)
    cached = {v["name"]: (v["cached_bytes"], v["cacheable_bytes"]) for v in shown["versions"]}
    assert cached == {"p/one:v0": (100, 100), "p/one:v1": (150, 150), "q/two:v0": (100, 100)}
    assert shown["unreferenced"] == {"blocks": 1, "bytes": 6}
    assert "1 block (6 B) belong to no version" in cli("cache", "status").out
    only = status(cli, "q")
    assert [v["name"] for v in only["versions"]] == ["q/two:v0"] and only["unreferenced"] is None
    assert [v["name"] for v in status(cli, "p/one")["versions"]] == ["p/one:v0", "p/one:v1"]
    # Evicting q/two drops the object's block, which p/one's versions reference too: blocks are objects'.
    assert cli("cache", "evict", "q/two").out == "evicted 1 block (100 B) of q/two:v0\n"
    assert status(cli, "p/one:v1")["versions"][0]["cached_bytes"] == 50


def test_bad_input_is_one_line_and_changes_nothing(cli: Cli, registry_url: str, tmp_path: Path,
                                                   cache_dir: Path) -> None:  # fmt: skip
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    cli("cache", "prefetch", "p/ds", "-q")
    before = status(cli)
    for args, message in (
        (["evict", "p/ds", "--path", "nope/"], "no file of p/ds:v0 is at or under 'nope/'"),
        (["evict", "p/ds:v9"], "p/ds has no version v9"),
        (["evict", "p/nothing"], "nothing"),
        (["evict", "p/ds:"], "empty version or alias"),
        (["status", "p/ds:v9"], "p/ds has no version v9"),
        (["status", "nothing"], "no project 'nothing'"),
        (["status", "p/nothing"], "nothing"),
    ):
        one_line_error(cli("cache", *args, ok=False), message)
    assert status(cli) == before

    (tmp_path / "a-file").write_text("x")
    one_line_error(cli("cache", "status", "--cache-dir", str(tmp_path / "a-file"), ok=False),
                   f"Directory '{tmp_path / 'a-file'}' is a file")  # fmt: skip
    broken = tmp_path / "broken"
    (broken / "blocks").mkdir(parents=True)
    (broken / "blocks" / "cache.db").write_bytes(b"not a database, whatever it claims" * 100)
    for command in (["status"], ["evict", "p/ds"]):
        result = cli("cache", *command, "--cache-dir", str(broken), ok=False)
        one_line_error(result, f"cannot use the cache directory {broken}: file is not a database")
    assert status(cli) == before


def test_help_explains_every_option() -> None:
    commands = {"cache status": cli_module.cache_status_cmd, "cache evict": cli_module.cache_evict_cmd,
                "cache prefetch": cli_module.cache_prefetch_cmd, "diff": cli_module.diff_cmd}  # fmt: skip
    for name, command in commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts}"


# -- beside a live mount -------------------------------------------------------------------------------------


def test_evict_beside_a_live_mount_makes_the_next_read_fetch_again(cli: Cli, registry_url: str, cache_dir: Path,
                                                                    mount_factory: Any,
                                                                    stalling_http: StallingServer) -> None:  # fmt: skip
    first = read_through_a_mount(registry_url, mount_factory, stalling_http)
    # Waits for the mount's claim on the block, so the block is in the cache once this returns.
    assert cli("cache", "prefetch", "p/web", "-q").out.startswith("0 blocks fetched (0 B), 1 already cached")
    assert status(cli, "p/web")["versions"][0]["percent"] == 100  # the mount is running meanwhile

    assert cli("cache", "evict", "p/web").out == "evicted 1 block (4.0 KiB) of p/web:v0\n"
    assert status(cli, "p/web")["versions"][0]["cached_blocks"] == 0
    assert first.stats()["fetches"] == 1  # still mounted and answering

    second = mount_factory()  # shares the cache: what it lacks there, it fetches
    assert (second.path / "p/web/v0/slow.bin").read_bytes() == stalling_http.body
    assert stalling_http.requests.count("GET") == 2
    assert second.stats()["fetches"] == 1
    assert cli("cache", "prefetch", "p/web", "-q").out.startswith("0 blocks fetched (0 B), 1 already cached")
    assert stalling_http.requests.count("GET") == 2


def test_cache_dir_names_another_cache(cli: Cli, registry_url: str, tmp_path: Path, cache_dir: Path) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    other = str(tmp_path / "a mount's cache")
    prefetched = cli("cache", "prefetch", "p/ds", "--path", "labels.csv", "--cache-dir", other, "-q")
    assert prefetched.out.startswith("1 block fetched")
    assert status(cli, "--cache-dir", other)["blocks"] == 1
    one_line_error(cli("cache", "status", ok=False), f"no block cache in {cache_dir}")  # the default one is untouched
    assert cli("cache", "evict", "p/ds", "--cache-dir", other).out == "evicted 1 block (6 B) of p/ds:v0\n"
