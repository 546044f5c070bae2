"""``refmount mount --metrics``: Prometheus text scraped over HTTP from a real mount while it reads."""

from __future__ import annotations

import itertools
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import refmount
from refmount import config
from refmount.buffers import Block
from refmount.cache import BlockCache
from refmount.fstab import mount_args
from refmount.latency import BOUNDS_S, Latencies
from refmount.reader import BLOCK_SIZE
from refmount.stores.file import file_uri
from tests.conftest import Cli
from tests.mounts import is_mounted
from tests.servers import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}  # fmt: skip


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the mount has not exported it (no request of that kind yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: Samples, operation: str) -> float:
    return value(samples, "refmount_fuse_request_duration_seconds_count", operation=operation)


def until(condition: Any, what: str) -> None:
    """Wait for work the daemon does in the background (cache writes); a deadlock guard, not a timing check."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def tree(tmp_path: Path, cli: Cli) -> dict[str, bytes]:
    files = {f"small/{i}.bin": os.urandom(3000 + i) for i in range(5)}
    files["big.bin"] = os.urandom(BLOCK_SIZE + 1000)  # two blocks
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    cli("log", "p/ds", file_uri(tmp_path / "src"))
    return files


def test_counters_move_as_the_mount_reads(tree: dict[str, bytes], mount_factory: Any) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    m = mount_factory(extra_args=("--metrics", f":{port}"))  # :PORT is 127.0.0.1
    assert f"metrics {url}, " in m.log()
    version = m.path / "p" / "ds" / "v0"
    before = scrape(url)
    assert value(before, "refmount_mount_info", mountpoint=str(m.path), version=refmount.__version__)
    assert requests_of(before, "read") == 0

    def served(metrics: str) -> float:  # read through the daemon, or stored in the page cache with its open
        return requests_of(metrics, "read") + value(metrics, "refmount_page_cache_stored_files_total")

    reads, servings = [requests_of(before, "read")], [served(before)]
    for rel in sorted(tree):  # scraped between reads: each new file is served by the daemon
        assert (version / rel).read_bytes() == tree[rel]
        reads.append(requests_of(metrics := scrape(url), "read"))
        servings.append(served(metrics))
    assert all(a < b for a, b in itertools.pairwise(servings)), servings
    with pytest.raises(OSError):
        os.getxattr(version / "big.bin", "user.nothing")  # ENODATA: an error of a getxattr request

    blocks, size = len(tree) + 1, sum(map(len, tree.values()))
    until(lambda: value(scrape(url), "refmount_cache_blocks") == blocks, "the fetched blocks reach the disk cache")
    after = scrape(url)
    assert value(after, "refmount_read_bytes_total") >= size
    assert value(after, "refmount_cache_misses_total") == blocks  # each block fetched once
    assert value(after, "refmount_cache_hits_total", tier="disk") == 0
    assert value(after, "refmount_store_request_duration_seconds_count", scheme="file") >= 1
    assert value(after, "refmount_store_bytes_total", scheme="file") == size
    assert value(after, "refmount_store_errors_total", scheme="file") == 0
    assert requests_of(after, "lookup") > 0
    assert value(after, "refmount_fuse_request_duration_seconds_bucket", operation="read", le="+Inf") == reads[-1]
    assert value(after, "refmount_fuse_request_duration_seconds_sum", operation="read") > 0
    assert value(after, "refmount_fuse_errors_total", operation="getxattr", errno="ENODATA") >= 1
    assert value(after, "refmount_registry_requests_total") > 0
    assert value(after, "refmount_registry_errors_total") == 0
    assert value(after, "refmount_cache_size_bytes") >= size
    assert value(after, "refmount_cache_evictions_total") == 0
    assert value(after, "process_cpu_seconds_total") > 0

    # The kernel's pages of one file dropped: its re-read reaches the daemon, which has the block in memory.
    memory_hits = value(after, "refmount_cache_hits_total", tier="memory")
    fd = os.open(version / "small/0.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.read(fd, 1 << 16) == tree["small/0.bin"]
    finally:
        os.close(fd)
    again = scrape(url)
    assert requests_of(again, "read") > reads[-1]
    assert value(again, "refmount_cache_hits_total", tier="memory") > memory_hits
    assert value(again, "refmount_cache_misses_total") == blocks

    # A new daemon on the same cache (and port: the first one's server stopped with its mount) reads from disk.
    m.stop()
    second = mount_factory(extra_args=("--metrics", f"127.0.0.1:{port}"))
    for rel, data in tree.items():
        assert (second.path / "p/ds/v0" / rel).read_bytes() == data
    warm = scrape(url)
    assert value(warm, "refmount_cache_hits_total", tier="disk") == blocks
    assert value(warm, "refmount_cache_misses_total") == 0
    assert value(warm, "refmount_store_request_duration_seconds_count", scheme="file") == 0


def test_metrics_are_off_by_default(tree: dict[str, bytes], mount_factory: Any) -> None:
    m = mount_factory()
    assert "metrics off, " in m.log()


@pytest.mark.parametrize("foreground", [False, True])
def test_an_unusable_address_is_one_line_and_mounts_nothing(tree: dict[str, bytes], cli: Cli, tmp_path: Path,
                                                            foreground: bool) -> None:  # fmt: skip
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    flags = ["--cache-dir", str(tmp_path / "cache"), *(["--foreground"] if foreground else [])]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("mount", str(mnt), *flags, "--metrics", f"127.0.0.1:{port}", ok=False)
    assert result.err.strip() == f"refmount: error: cannot serve metrics at 127.0.0.1:{port}: Address already in use"
    assert result.code == 2 and not is_mounted(mnt)
    # 192.0.2.1 (TEST-NET-1) is no address of this machine.
    result = cli("mount", str(mnt), *flags, "--metrics", "192.0.2.1:9464", ok=False)
    assert result.err.strip().endswith("cannot serve metrics at 192.0.2.1:9464: Cannot assign requested address")
    assert not is_mounted(mnt)


def test_a_malformed_address_is_refused_before_anything(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = cli("mount", str(tmp_path / "mnt"), "--metrics", "localhost:http", ok=False)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "option --metrics: invalid metrics 'localhost:http': expected HOST:PORT" in result.err


@pytest.mark.parametrize(("given", "meant"), [(":9464", "127.0.0.1:9464"), ("9464", "127.0.0.1:9464"),
                                               ("0.0.0.0:9464", "0.0.0.0:9464"), ("[::1]:9464", "[::1]:9464"),
                                               ("localhost:09464", "localhost:9464"), ("OFF", "off")])  # fmt: skip
def test_address_forms(given: str, meant: str) -> None:
    assert config.metrics_address(given) == meant


@pytest.mark.parametrize("bad", ["", "host", "host:", "host:0", "host:65536", "::1:9464", "[::1]", "a:b:9464"])
def test_bad_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        config.metrics_address(bad)


def test_config_file_env_and_fstab_set_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFMOUNT_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "config.toml").write_text('metrics = ":9464"\n')
    monkeypatch.delenv("REFMOUNT_METRICS", raising=False)
    assert config.load().metrics == "127.0.0.1:9464"
    monkeypatch.setenv("REFMOUNT_METRICS", "0.0.0.0:9100")  # as the systemd unit's EnvironmentFile sets it
    settings = config.load()
    assert (settings.metrics, settings.sources["metrics"]) == ("0.0.0.0:9100", "env REFMOUNT_METRICS")
    assert config.load({"metrics": "off"}).metrics == "off"
    assert mount_args(["refmount", "/mnt/a", "-o", "metrics=:9464,_netdev"]) == ["mount", "/mnt/a", "--metrics",
                                                                                 ":9464"]  # fmt: skip


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    latencies = Latencies()
    for seconds in (BOUNDS_S[0], BOUNDS_S[0] * 1.01, BOUNDS_S[-1] * 2):  # on a bound, just above it, past all
        latencies.observe_ns(round(seconds * 1e9))
    buckets = dict(latencies.cumulative())
    assert buckets[repr(BOUNDS_S[0])] == 1 and buckets[repr(BOUNDS_S[1])] == 2
    assert buckets[repr(BOUNDS_S[-1])] == 2 and buckets["+Inf"] == latencies.count == 3


def test_evictions_are_counted(tmp_path: Path) -> None:
    cache = BlockCache(tmp_path / "cache", size_limit=1 << 20)
    try:
        assert cache.evictions == 0
        for i in range(40):  # 2.5 MiB of 64 KiB blocks into a 1 MiB cache
            cache.put(f"block-{i}", Block.of(os.urandom(64 << 10)))
        assert cache.evictions is not None and cache.evictions > 0
        assert cache.blocks + cache.evictions == 40  # each block is either still there or was evicted
        assert cache.size_limit == 1 << 20
    finally:
        cache.close()
