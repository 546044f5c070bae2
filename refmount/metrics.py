"""Prometheus metrics of a mount, served at ``http://HOST:PORT/metrics`` (``refmount mount --metrics``).

Nothing here runs on the read path. The daemon counts in plain integers as it goes (its FUSE requests,
reader, stores and registry questions: see :mod:`refmount.latency`); a scrape turns them into metric
families, in the HTTP server's thread, and reads the block cache's size from its SQLite index then.
prometheus_client is imported only by a mount that serves metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from . import __version__
from .errors import InvalidInput
from .latency import Latencies

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .cache import BlockCache
    from .fs.core import Filesystem
    from .fs.lineage import LineageRecorder
    from .fs.sweep import Sweeper


def _histogram(name: str, documentation: str, label: str, latencies: list[tuple[str, Latencies]]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, observed in latencies:
        family.add_metric([value], observed.cumulative(), observed.sum_ns / 1e9)
    return family


class MountCollector:
    """Metric families read from a mount's counters at scrape time. Until :meth:`watch` is given the
    file system (it is made once the daemon runs), only the block cache's are there."""

    def __init__(self, cache: BlockCache, mountpoint: str):
        self.cache = cache
        self.mountpoint = mountpoint
        self.fs: Filesystem | None = None

    def watch(self, fs: Filesystem) -> None:
        self.fs = fs

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("refmount_mount_info", "The mount these metrics describe.",
                                 labels=["mountpoint", "version"])  # fmt: skip
        info.add_metric([self.mountpoint, __version__], 1)
        yield info
        yield from self._cache()
        if self.fs is not None:
            yield from self._requests(self.fs)
            yield from self._reader(self.fs)
            if self.fs.lineage is not None:
                yield from self._lineage(self.fs.lineage)
            if self.fs.sweeper is not None:
                yield from self._sweeper(self.fs.sweeper)

    def _cache(self) -> Iterator[Metric]:
        cache = self.cache
        yield GaugeMetricFamily("refmount_cache_size_bytes", "Bytes the block cache holds on disk (every "
                                "process sharing its directory).", value=cache.volume)  # fmt: skip
        yield GaugeMetricFamily("refmount_cache_limit_bytes", "The block cache's size limit.", value=cache.size_limit)
        yield GaugeMetricFamily("refmount_cache_blocks", "Blocks in the block cache.", value=cache.blocks)
        if cache.evictions is not None:
            yield CounterMetricFamily("refmount_cache_evictions", "Blocks this daemon's cache writes evicted past "
                                      "the size limit.", value=cache.evictions)  # fmt: skip
        yield CounterMetricFamily("refmount_cache_corrupt_blocks", "Cached blocks that failed their checksum "
                                  "(dropped and fetched again).", value=cache.corrupt_blocks)  # fmt: skip

    def _requests(self, fs: Filesystem) -> Iterator[Metric]:
        # Copied first (one C call each): the event loop's thread may add a kind meanwhile.
        yield _histogram("refmount_fuse_request_duration_seconds", "Kernel requests answered, by operation, "
                         "and how long the daemon took.", "operation", sorted(fs.requests.items()))  # fmt: skip
        errors = CounterMetricFamily("refmount_fuse_errors", "Kernel requests answered with an error, by errno.",
                                     labels=["operation", "errno"])  # fmt: skip
        for (kind, code), n in sorted(fs.errors.items()):
            errors.add_metric([kind, code], n)
        yield errors
        yield CounterMetricFamily("refmount_read_bytes", "Bytes served by read requests and stored in the "
                                  "kernel's page cache with opens.", value=fs.counters.read_bytes)  # fmt: skip
        yield CounterMetricFamily("refmount_page_cache_stored_files", "Small files stored in the kernel's page "
                                  "cache with their open: their reads never reach the daemon.",
                                  value=fs.counters.stored_files)  # fmt: skip
        registry = fs.ns
        yield CounterMetricFamily("refmount_registry_requests", "Questions asked of the registry (projects, "
                                  "versions, aliases, manifests).", value=registry.registry_requests)  # fmt: skip
        yield CounterMetricFamily("refmount_registry_errors", "Registry questions that failed (answered EIO, or "
                                  "from what was known before).", value=registry.registry_errors)  # fmt: skip

    def _reader(self, fs: Filesystem) -> Iterator[Metric]:
        reader = fs.reader
        stats = reader.stats
        hits = CounterMetricFamily("refmount_cache_hits", "Blocks found without a store request: in the daemon's "
                                   "memory, or in the disk cache.", labels=["tier"])  # fmt: skip
        hits.add_metric(["memory"], stats.memory_hits)
        hits.add_metric(["disk"], stats.disk_hits)
        yield hits
        yield CounterMetricFamily("refmount_cache_misses", "Blocks fetched from a store.", value=stats.fetches)
        yield GaugeMetricFamily("refmount_memory_cache_bytes", "Bytes of blocks kept in the daemon's memory.",
                                value=reader.memory_bytes)  # fmt: skip
        by_scheme = []
        for scheme, requests in sorted(reader.store_requests.items()):
            with requests.lock:
                copy = Latencies()
                copy.counts, copy.sum_ns = list(requests.counts), requests.sum_ns
                by_scheme.append((scheme, copy, requests.errors, requests.bytes))
        yield _histogram("refmount_store_request_duration_seconds", "Store requests (ranged GETs, file reads), by "
                         "scheme, and how long they took.", "scheme", [(s, c) for s, c, _, _ in by_scheme])  # fmt: skip
        errors = CounterMetricFamily("refmount_store_errors", "Store requests that failed.", labels=["scheme"])
        received = CounterMetricFamily("refmount_store_bytes", "Bytes received from stores.", labels=["scheme"])
        for scheme, _, failed, got in by_scheme:
            errors.add_metric([scheme], failed)
            received.add_metric([scheme], got)
        yield errors
        yield received

    @staticmethod
    def _lineage(lineage: LineageRecorder) -> Iterator[Metric]:
        stats = lineage.stats
        yield CounterMetricFamily("refmount_lineage_records_written", "Lineage records (a job's use of a version) "
                                  "written to the registry.", value=stats.written)  # fmt: skip
        yield CounterMetricFamily("refmount_lineage_write_failures", "Lineage writes the registry did not take "
                                  "(their records are kept, written later).", value=stats.write_failures)  # fmt: skip
        yield CounterMetricFamily("refmount_lineage_records_dropped", "Uses of a version by a job not recorded: "
                                  "too many were waiting for the registry.", value=stats.dropped)  # fmt: skip
        yield GaugeMetricFamily("refmount_lineage_pending_records", "Lineage records waiting to be written.",
                                value=lineage.pending)  # fmt: skip

    @staticmethod
    def _sweeper(sweeper: Sweeper) -> Iterator[Metric]:
        stats = sweeper.stats
        yield CounterMetricFamily("refmount_dir_readahead_files", "Small files fetched ahead of their lookup "
                                  "(--dir-readahead).", value=stats.files)  # fmt: skip
        yield CounterMetricFamily(
            "refmount_dir_readahead_bytes", "Bytes of the files fetched ahead.", value=stats.bytes
        )
        yield CounterMetricFamily("refmount_dir_readahead_used_files", "Files fetched ahead that were looked up "
                                  "afterwards.", value=stats.used)  # fmt: skip
        yield CounterMetricFamily("refmount_dir_readahead_failures", "Files fetching ahead failed for (their "
                                  "readers fetch them themselves).", value=stats.failures)  # fmt: skip
        yield GaugeMetricFamily("refmount_dir_readahead_ahead_bytes", "Bytes fetched ahead (or being fetched) "
                                "not yet looked up.", value=sweeper.ahead_bytes)  # fmt: skip


class MetricsServer:
    """The HTTP server of ``/metrics``, in a daemon thread of its own (prometheus_client's), bound at once."""

    def __init__(self, address: str, collector: MountCollector):
        host, _, port = address.rpartition(":")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)  # type: ignore[arg-type]  (a collector is anything with collect())
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.collector = collector
        try:
            self._server: WSGIServer
            self._server, self._thread = start_http_server(int(port), host.strip("[]"), registry=registry)
        except OSError as exc:
            raise InvalidInput(f"cannot serve metrics at {address}: {exc.strerror or exc}") from exc
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{f'[{bound_host}]' if ':' in str(bound_host) else bound_host}:{bound_port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port (with the mount)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
