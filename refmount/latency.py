"""Latency histograms of plain integers, cheap enough for every FUSE request.

A prometheus_client Histogram takes a lock and walks Python objects on each observation; the daemon
answers each request on one thread and counts tens of thousands of them a second, so it keeps bucket
counts in a list instead and :mod:`refmount.metrics` turns them into Prometheus histograms when scraped.
"""

from __future__ import annotations

import bisect
import threading

# Upper bounds of the buckets, in seconds: a page-cache-warm request takes tens of microseconds, a cold
# read of a remote object tens of milliseconds, a stalled store its timeouts and retries.
BOUNDS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0)  # fmt: skip
_BOUNDS_NS = tuple(int(bound * 1e9) for bound in BOUNDS_S)


class Latencies:
    """Durations counted by bucket (the last bucket: above every bound), and their sum. Not thread-safe:
    observed from one thread (FUSE requests: the event loop's), or under a lock (see :class:`Requests`)."""

    __slots__ = ("counts", "sum_ns")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BOUNDS_NS) + 1)
        self.sum_ns = 0

    def observe_ns(self, duration_ns: int) -> None:
        self.counts[bisect.bisect_left(_BOUNDS_NS, duration_ns)] += 1  # bucket i: bounds[i-1] < d <= bounds[i]
        self.sum_ns += duration_ns

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or below it), ending with ``+Inf``."""
        buckets, total = [], 0
        for bound, n in zip((*map(repr, BOUNDS_S), "+Inf"), self.counts, strict=True):
            total += n
            buckets.append((bound, total))
        return buckets


class Requests(Latencies):
    """Requests made from several threads (a store's, from worker threads): latencies, failures and bytes
    received, each update under :attr:`lock`."""

    __slots__ = ("bytes", "errors", "lock")

    def __init__(self) -> None:
        super().__init__()
        self.errors = 0
        self.bytes = 0
        self.lock = threading.Lock()
