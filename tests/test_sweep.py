"""Readahead across files (refmount.fs.sweep) through the real kernel: a directory read file by file is fetched
ahead of the reader, as far as its reads allow and no further, each file once; off with --dir-readahead 0."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from refmount.fs.sweep import AHEAD_PER_LOOKUP, MAX_FAILURES, SWEEP_AFTER, SWEEP_BATCH, SWEEP_JOBS
from refmount.stores.file import file_uri
from tests.servers import S3Env, free_port
from tests.test_metrics import scrape, value
from tests.test_mount import log

FILE_BYTES = 16 << 10


@pytest.fixture
def files(tmp_path: Path, registry_url: str) -> dict[str, bytes]:
    """200 small files in d/ of p/ds:v0 (file:// references), by name: more than a failing sweep tries."""
    source = tmp_path / "src" / "d"
    source.mkdir(parents=True)
    tree = {f"f{i:03}.bin": os.urandom(FILE_BYTES) for i in range(200)}
    for name, data in tree.items():
        (source / name).write_bytes(data)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    return tree


def settled(mounted: Any, timeout: float = 20) -> dict[str, Any]:
    """The mount's stats once the readahead has stopped moving (unchanged for half a second)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        stats = mounted.stats()
        now = (stats.get("dir_readahead"), stats["fetches"])
        if now == last:
            return stats
        last = now
        time.sleep(0.5)
    raise AssertionError(f"readahead still moving after {timeout} s: {last}")


def test_a_directory_read_file_by_file_is_fetched_ahead_as_far_as_its_reads_go(files: dict[str, bytes],
                                                                               mount_factory: Any) -> None:  # fmt: skip
    port = free_port()
    mounted = mount_factory(extra_args=("--metrics", f":{port}"))
    directory = mounted.path / "p/ds/v0/d"
    names = sorted(files)
    for name in names[: SWEEP_AFTER - 1]:  # a file or two: nothing else is fetched
        assert (directory / name).read_bytes() == files[name]
    stats = settled(mounted)
    assert stats["fetches"] == SWEEP_AFTER - 1 and stats["dir_readahead"]["directories"] == 0
    assert (directory / names[SWEEP_AFTER - 1]).read_bytes() == files[names[SWEEP_AFTER - 1]]
    stats = settled(mounted)
    ahead = SWEEP_AFTER * AHEAD_PER_LOOKUP  # each file looked up allows this many more, and the reader stopped
    assert stats["dir_readahead"] == {"directories": 1, "files": ahead, "bytes": ahead * FILE_BYTES, "used": 0,
                                      "failures": 0, "ahead_bytes": ahead * FILE_BYTES}  # fmt: skip
    assert stats["fetches"] == SWEEP_AFTER + ahead
    for name in names:  # the rest, in another order than the sweep's
        assert (directory / name).read_bytes() == files[name], name
    for name in reversed(names):
        assert (directory / name).read_bytes() == files[name], name
    stats = settled(mounted)
    assert stats["fetches"] == len(files)  # each file once, whoever fetched it
    swept = stats["dir_readahead"]
    assert swept["files"] > ahead and swept["used"] == swept["files"] and swept["ahead_bytes"] == 0
    metrics = scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(metrics, "refmount_dir_readahead_files_total") == swept["files"]
    assert value(metrics, "refmount_dir_readahead_bytes_total") == swept["bytes"]
    assert value(metrics, "refmount_dir_readahead_used_files_total") == swept["used"]
    assert value(metrics, "refmount_dir_readahead_failures_total") == 0
    assert ("refmount_dir_readahead_ahead_bytes", ()) in metrics


def test_once_a_job_reads_across_a_version_each_directory_is_swept_at_its_first_cold_file(
        tmp_path: Path, registry_url: str, mount_factory: Any) -> None:  # fmt: skip
    """A shuffled epoch over many directories: after SWEEP_AFTER cold files anywhere in the version, a directory
    is swept as soon as one of its files is looked up cold, not after SWEEP_AFTER of its own."""
    directories = SWEEP_AFTER + 2
    tree = {f"d{d}/f{i:02}.bin": os.urandom(FILE_BYTES) for d in range(directories) for i in range(20)}
    for name, data in tree.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_bytes(data)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    mounted = mount_factory()
    version = mounted.path / "p/ds/v0"
    for d in range(SWEEP_AFTER - 1):  # a file here and there: nothing else is fetched
        assert (version / f"d{d}/f00.bin").read_bytes() == tree[f"d{d}/f00.bin"]
    stats = settled(mounted)
    assert stats["fetches"] == SWEEP_AFTER - 1 and stats["dir_readahead"]["directories"] == 0
    for d in range(SWEEP_AFTER - 1, directories):  # the version's SWEEP_AFTER-th cold file, then more directories
        assert (version / f"d{d}/f00.bin").read_bytes() == tree[f"d{d}/f00.bin"]
    stats = settled(mounted)
    assert stats["dir_readahead"]["directories"] == directories - (SWEEP_AFTER - 1)  # one sweep per directory
    assert stats["dir_readahead"]["files"] == stats["fetches"] - directories > 0
    assert stats["dir_readahead"]["failures"] == 0


def test_off(files: dict[str, bytes], mount_factory: Any) -> None:
    mounted = mount_factory(extra_args=("--dir-readahead", "0"))
    directory = mounted.path / "p/ds/v0/d"
    for name in sorted(files)[:10]:
        assert (directory / name).read_bytes() == files[name]
    stats = settled(mounted)
    assert stats["fetches"] == 10 and "dir_readahead" not in stats
    assert "dir_readahead off" in mounted.log()


def test_files_ahead_hold_at_most_a_quarter_of_the_cache(files: dict[str, bytes], mount_factory: Any) -> None:
    mounted = mount_factory(extra_args=("--cache-size", "1M"))
    directory = mounted.path / "p/ds/v0/d"
    names = sorted(files)
    room = (1 << 20) // 4 // FILE_BYTES  # fewer than the reads' allowance
    assert room < SWEEP_AFTER * AHEAD_PER_LOOKUP
    for name in names[:SWEEP_AFTER]:
        assert (directory / name).read_bytes() == files[name]
    swept = settled(mounted)["dir_readahead"]
    assert swept["files"] == room and swept["ahead_bytes"] == room * FILE_BYTES
    for name in names[SWEEP_AFTER : SWEEP_AFTER + 4]:  # swept files read: room for as many more
        assert (directory / name).read_bytes() == files[name]
    swept = settled(mounted)["dir_readahead"]
    assert swept["files"] == room + 4 and swept["used"] == 4 and swept["ahead_bytes"] == room * FILE_BYTES


def test_a_failing_store_ends_the_sweep(files: dict[str, bytes], tmp_path: Path, mount_factory: Any) -> None:
    mounted = mount_factory(extra_args=("--dir-readahead", "64"))
    directory = mounted.path / "p/ds/v0/d"
    names = sorted(files)
    for name in names[SWEEP_AFTER:]:  # the logged bytes are gone: nothing but errors to fetch
        (tmp_path / "src/d" / name).unlink()
    for name in names[:SWEEP_AFTER]:
        assert (directory / name).read_bytes() == files[name]
    swept = settled(mounted)["dir_readahead"]
    assert swept["files"] == 0
    # A batch stops at its first failure: past MAX_FAILURES in a row, only the batches under way add one each.
    assert MAX_FAILURES <= swept["failures"] <= MAX_FAILURES + SWEEP_JOBS < len(files) - SWEEP_AFTER
    assert f"stopped after {MAX_FAILURES} failed fetches in a row" in mounted.log()
    with pytest.raises(OSError) as caught:  # the reader of such a file sees why, as without readahead
        (directory / names[-1]).read_bytes()
    assert caught.value.errno == errno.EIO


def test_a_failure_in_a_batch_leaves_its_other_files_to_their_readers(files: dict[str, bytes], tmp_path: Path,
                                                                      mount_factory: Any) -> None:  # fmt: skip
    names = sorted(files)
    broken = names[SWEEP_AFTER]  # the first file the sweep tries: the rest of its batch is not tried
    (tmp_path / "src/d" / broken).unlink()
    mounted = mount_factory()
    directory = mounted.path / "p/ds/v0/d"
    for name in names[:SWEEP_AFTER]:
        assert (directory / name).read_bytes() == files[name]
    swept = settled(mounted)["dir_readahead"]
    assert swept["failures"] == 1 and swept["files"] == SWEEP_AFTER * AHEAD_PER_LOOKUP - SWEEP_BATCH
    for name in names:  # none waits for a fetch that never ends; each gets its own bytes, or its own error
        if name == broken:
            with pytest.raises(OSError) as caught:
                (directory / name).read_bytes()
            assert caught.value.errno == errno.EIO
        else:
            assert (directory / name).read_bytes() == files[name], name


def test_files_fetched_ahead_from_s3_are_the_logged_versions(s3_env: S3Env, registry_url: str,
                                                             mount_factory: Any) -> None:  # fmt: skip
    """Objects overwritten after logging, in a versioned bucket: what is fetched ahead is what was logged."""
    bucket = s3_env.bucket(versioned=True)
    logged = {f"f{i:02}.bin": os.urandom(1 + i * 1000) for i in range(40)}
    for name, data in logged.items():
        s3_env.put(bucket, f"ds/d/{name}", data)
    log(registry_url, "p/ds", f"s3://{bucket}/ds/")
    for name in logged:
        s3_env.put(bucket, f"ds/d/{name}", b"not the logged bytes")
    mounted = mount_factory()
    directory = mounted.path / "p/ds/v0/d"
    names = sorted(logged)
    for name in names[:SWEEP_AFTER]:
        assert (directory / name).read_bytes() == logged[name]
    stats = settled(mounted)
    assert stats["dir_readahead"]["files"] == len(logged) - SWEEP_AFTER  # the rest, within the reads' allowance
    for name in reversed(names):
        assert (directory / name).read_bytes() == logged[name], name
    stats = settled(mounted)
    assert stats["fetches"] == len(logged) and stats["dir_readahead"]["used"] == len(logged) - SWEEP_AFTER
