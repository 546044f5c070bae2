"""The ``refmount`` fsspec filesystem: the mount's tree and bytes without FUSE, through the same pins and cache."""

from __future__ import annotations

import errno
import multiprocessing
import os
from pathlib import Path
from typing import Any

import fsspec
import pytest

from refmount.filesystem import RefmountFileSystem
from refmount.stores.file import file_uri
from tests.server_http import StallingServer
from tests.servers import S3Env
from tests.test_mount import log, make_tree


@pytest.fixture
def fs(registry_url: str, tmp_path: Path) -> Any:
    made = RefmountFileSystem(registry_url, cache_dir=str(tmp_path / "cache"), skip_instance_cache=True)
    yield made
    made.close()


def test_registered_as_the_refmount_protocol(registry_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"), aliases=["best"])
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))  # the usual configuration, nothing passed
    assert fsspec.get_filesystem_class("refmount") is RefmountFileSystem
    for url in (
        "refmount://p/ds:v0/labels.csv",
        "refmount://p/ds/best/labels.csv",
        "refmount://p/ds:latest/labels.csv",
    ):
        with fsspec.open(url) as f:
            assert f.read() == tree["labels.csv"]


def test_same_tree_and_bytes_as_the_mount(fs: Any, registry_url: str, tmp_path: Path, mount_factory: Any) -> None:
    trees = []
    for seed in range(2):
        trees.append(make_tree(tmp_path / f"src{seed}", seed))
        log(registry_url, "p/ds", file_uri(tmp_path / f"src{seed}"), aliases=["best"] if seed == 0 else ())
    mounted = mount_factory().path
    assert fs.ls("", detail=False) == ["p"] and fs.ls("p", detail=False) == ["p/ds"]
    assert sorted(fs.ls("p/ds", detail=False)) == sorted(f"p/ds/{name}" for name in os.listdir(mounted / "p/ds"))
    for label, tree in (("v0", trees[0]), ("v1", trees[1]), ("best", trees[0]), ("latest", trees[1])):
        files = sorted(fs.find(f"p/ds/{label}"))
        assert files == sorted(f"p/ds/{label}/{rel}" for rel in tree)
        for rel, data in tree.items():
            assert fs.cat(f"p/ds/{label}/{rel}") == data == (mounted / "p/ds" / label / rel).read_bytes()
            assert fs.info(f"p/ds/{label}/{rel}")["size"] == len(data)
    info = fs.info("p/ds:v1/big.bin")
    assert info["version"] == "p/ds:v1" and info["ref"] == file_uri(tmp_path / "src1/big.bin")
    assert fs.info("p/ds/best")["alias_of"] == "v0"
    assert fs.glob("p/ds/v0/train/**/*.bin") == ["p/ds/v0/train/deep/er/x.bin"]


def test_ranged_reads(fs: Any, registry_url: str, tmp_path: Path) -> None:
    big = make_tree(tmp_path / "src", 0)["big.bin"]
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    path = "p/ds/v0/big.bin"
    starts, ends = [0, 100, len(big) - 10, 5, -20], [10, 300_000, len(big), 5, None]
    assert fs.cat_ranges([path] * 5, starts, ends) == [big[s:e] for s, e in zip(starts, ends, strict=True)]
    with fs.open(path) as f:
        f.seek(len(big) // 2)
        assert f.read(1000) == big[len(big) // 2 : len(big) // 2 + 1000]
        f.seek(-7, os.SEEK_END)
        assert f.read() == big[-7:]
    results = fs.cat_ranges([path, "p/ds/v0/nope"], [0, 0], [4, 4])  # on_error="return", as fsspec does
    assert results[0] == big[:4] and isinstance(results[1], FileNotFoundError)


def test_get_downloads_as_refmount_download_does(fs: Any, registry_url: str, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    fs.get("p/ds/v0/", str(tmp_path / "out"), recursive=True)
    assert {rel: (tmp_path / "out" / rel).read_bytes() for rel in tree} == tree
    (tmp_path / "src/labels.csv").write_bytes(b"a,b\n9\n")  # changed at the same size, after logging
    (tmp_path / "out/labels.csv").unlink()
    fs.get("p/ds/v0/labels.csv", str(tmp_path / "out/labels.csv"))  # the logged bytes, from the cache
    assert (tmp_path / "out/labels.csv").read_bytes() == tree["labels.csv"]
    (tmp_path / "out/labels.csv").unlink()
    uncached = RefmountFileSystem(registry_url, cache=False, skip_instance_cache=True)
    try:
        with pytest.raises(OSError) as info:  # from the store: they are gone, so an error
            uncached.get("p/ds/v0/labels.csv", str(tmp_path / "out/labels.csv"))
    finally:
        uncached.close()
    assert info.value.errno == errno.EIO and not (tmp_path / "out/labels.csv").exists()
    assert not any(p.name.endswith(".refmount-part") for p in (tmp_path / "out").iterdir())  # no partial left


def test_bad_paths_and_writes_get_fsspecs_exceptions(fs: Any, registry_url: str, tmp_path: Path) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    for missing in ("nope", "p/nope", "p/ds/v7", "p/ds/nolabel", "p/ds/v0/nope.txt", "p/ds/v0/labels.csv/x"):
        with pytest.raises(FileNotFoundError, match="no such project, artifact, version or file"):
            fs.info(missing)
        assert not fs.exists(missing)
    with pytest.raises(IsADirectoryError):
        fs.cat("p/ds/v0/train")
    for write in (lambda: fs.open("p/ds/v0/new.txt", "wb"), lambda: fs.rm("p/ds/v0/labels.csv"),
                  lambda: fs.mkdir("p/ds/v0/d"), lambda: fs.pipe("p/ds/v0/labels.csv", b"x")):  # fmt: skip
        with pytest.raises(PermissionError) as info:
            write()
        assert info.value.errno == errno.EROFS
    assert fs.cat("p/ds/v0/labels.csv") == b"a,b\n0\n"  # unchanged


def test_pinned_or_error_on_overwritten_objects(fs: Any, registry_url: str, s3_env: S3Env) -> None:
    versioned, plain = s3_env.bucket(versioned=True), s3_env.bucket()
    for bucket in (versioned, plain):
        s3_env.put(bucket, "d/x.txt", b"as logged")
        log(registry_url, f"p/{bucket}", f"s3://{bucket}/d/")
        s3_env.put(bucket, "d/x.txt", b"overwritten!")
    assert fs.cat(f"p/{versioned}/v0/x.txt") == b"as logged"  # the logged object version
    with pytest.raises(OSError) as info:
        fs.cat(f"p/{plain}/v0/x.txt")  # that version is gone: an error, never other bytes
    assert info.value.errno == errno.EIO and "no longer matches the logged version" in str(info.value)


def test_shares_the_cache_of_a_live_mount(registry_url: str, tmp_path: Path, mount_factory: Any,
                                          stalling_http: StallingServer) -> None:  # fmt: skip
    stalling_http.stall = ""
    log(registry_url, "p/web", stalling_http.url)
    mounted = mount_factory()  # its cache: tmp_path / "cache"
    assert (mounted.path / "p/web/v0/slow.bin").read_bytes() == stalling_http.body
    assert stalling_http.requests.count("GET") == 1
    fs = RefmountFileSystem(registry_url, cache_dir=str(tmp_path / "cache"), skip_instance_cache=True)
    try:
        assert fs.cat("p/web/v0/slow.bin") == stalling_http.body
    finally:
        fs.close()
    assert stalling_http.requests.count("GET") == 1  # the block the mount fetched, read from the shared cache


def _read_all(job: tuple[Any, list[str]]) -> list[bytes]:
    fs, paths = job
    return [fs.cat(path) for path in paths]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_processes_read_through_a_pickled_filesystem(fs: Any, registry_url: str, tmp_path: Path,
                                                            start_method: str) -> None:  # fmt: skip
    """What a DataLoader with workers does: the parent reads first (fork copies its state), workers read too."""
    tree = make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    paths = [f"p/ds/v0/{rel}" for rel in sorted(tree)]
    assert fs.cat(paths[0]) == tree[sorted(tree)[0]]  # the parent's reader thread exists before the fork
    with multiprocessing.get_context(start_method).Pool(2) as pool:
        results = pool.map(_read_all, [(fs, paths), (fs, list(reversed(paths)))])
    expected = [tree[rel] for rel in sorted(tree)]
    assert results == [expected, list(reversed(expected))]
