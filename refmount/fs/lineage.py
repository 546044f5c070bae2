"""Lineage from what jobs actually open: the daemon's side (the rows go to the registry, registry/lineage.py).

Each open of a file names the opening process (the kernel tells its pid); the process's job is worked out
once per process from ``/proc`` (:mod:`refmount.jobs`) and kept a minute. Per (version, job) the daemon
counts files opened and bytes it served, in memory, on the event loop (no lock, no I/O: a dict lookup and
two additions per open). A background task writes what changed to the registry every few seconds in one
transaction; when the registry cannot take it the counts stay in memory and are written once it can, up
to ``max_pending`` (version, job) pairs, beyond which new pairs are dropped and counted. Reads never wait
for any of it.

Opens reach the daemon only because of this: a mount without lineage answers ``open`` with ENOSYS and the
kernel sends no open or release again (see adapter.py). With it, each open gets a handle of its own (see
``Filesystem.open``), which counts its reads into the open's :class:`Usage`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import trio

from ..jobs import Job, host_name, identify
from ..registry import LineageRecord, Registry

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 5.0
MAX_PENDING = 100_000
JOB_TTL_S = 60.0  # a pid's job is worked out again after this: pids are reused
IDENTIFY_TIMEOUT_S = 2.0  # /proc of a process stuck in the kernel can block its reader
_KNOWN_PIDS = 4096


class Usage:
    """What one job did with one version since the counts were last written."""

    __slots__ = ("bytes", "files", "first_seen", "job", "last_seen", "open", "version")

    def __init__(self, version: str, job: Job, now: float):
        self.version, self.job = version, job
        self.first_seen = self.last_seen = now
        self.files = self.bytes = 0  # not yet written
        self.open = 0  # handles counting into it


@dataclass
class LineageStats:
    written: int = 0  # records written to the registry
    write_failures: int = 0  # flushes the registry refused (each keeps its records for the next)
    dropped: int = 0  # (version, job) pairs not recorded: more than max_pending were waiting


class LineageRecorder:
    def __init__(self, registry: Registry, *, max_pending: int = MAX_PENDING,
                 flush_interval_s: float = FLUSH_INTERVAL_S):  # fmt: skip
        self.registry = registry
        self.max_pending = max_pending
        self.flush_interval_s = flush_interval_s
        self.host = host_name()
        self.stats = LineageStats()
        self._usage: dict[tuple[str, Job], Usage] = {}
        self._jobs: dict[int, tuple[float, Job]] = {}  # pid -> (when worked out, job)
        self._identifying: dict[int, trio.Event] = {}
        self._failing_since: float | None = None
        self._in_flight = 0  # records taken for a write that has not ended
        self._warned_full = False

    @property
    def pending(self) -> int:
        """(version, job) pairs with counts not yet written (copied first: a scrape reads it from another thread)."""
        return self._in_flight + sum(1 for usage in list(self._usage.values()) if usage.files or usage.bytes)

    # -- on the event loop, per request -----------------------------------------------------------
    async def opened(self, version: str, pid: int, uid: int | None) -> Usage:
        """Count an open of a file of ``version`` by process ``pid``; returns what its reads count into (until
        :meth:`closed`)."""
        job = await self._job(pid, uid)
        now = time.time()
        usage = self._usage.get((version, job))
        if usage is None:
            usage = Usage(version, job, now)
            if len(self._usage) < self.max_pending:
                self._usage[version, job] = usage
            else:  # counted, never written: a registry down for long enough must not grow the daemon unbounded
                self.stats.dropped += 1
                if not self._warned_full:
                    log.warning("lineage: %d (version, job) pairs are waiting for the registry: %s by %s and "
                                "further new pairs are not recorded until it takes them", self.max_pending,
                                version, job.name)  # fmt: skip
                    self._warned_full = True
        usage.files += 1
        usage.last_seen = now
        usage.open += 1
        return usage

    @staticmethod
    def closed(usage: Usage) -> None:
        """An open that :meth:`opened` counted ended (its counts may be forgotten once written)."""
        usage.open -= 1

    async def _job(self, pid: int, uid: int | None) -> Job:
        known = self._jobs.get(pid)
        if known is not None and time.monotonic() - known[0] < JOB_TTL_S:
            return known[1]
        while pid in self._identifying:  # another open of the same process is reading /proc already
            await self._identifying[pid].wait()
            known = self._jobs.get(pid)
            if known is not None:
                return known[1]
        done = self._identifying[pid] = trio.Event()
        try:
            job = None
            # In a thread, and bounded: reading another process's /proc entries can wait on its memory map,
            # which one of its threads may hold while it waits for this very loop (a page fault on the mount).
            with trio.move_on_after(IDENTIFY_TIMEOUT_S):
                job = await trio.to_thread.run_sync(identify, pid, uid, abandon_on_cancel=True)
            if job is None:
                job = Job("process", str(pid), self.host, uid, {"pid": pid, "note": "/proc did not answer in time"})
            if len(self._jobs) >= _KNOWN_PIDS:
                self._jobs.clear()
            self._jobs[pid] = (time.monotonic(), job)
            return job
        finally:
            del self._identifying[pid]
            done.set()

    # -- in the background ----------------------------------------------------------------------
    async def run(self) -> None:
        """Write what changed every ``flush_interval_s`` until cancelled."""
        while True:
            await trio.sleep(self.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the counts gathered since the last write; on failure keep them for the next one."""
        taken = self._take()
        if not taken:
            return
        records = [record for _, record in taken]
        self._in_flight = len(records)
        try:
            await trio.to_thread.run_sync(self.registry.record_lineage, records, abandon_on_cancel=True)
        except Exception as exc:
            self._in_flight = 0
            for usage, record in taken:  # given back: counted again at the next flush
                usage.files += record.files
                usage.bytes += record.bytes
            self.stats.write_failures += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("lineage: cannot write to the registry (%s); %d records kept in memory and retried "
                            "every %g s (reads go on)", " ".join(str(exc).split()), len(records),
                            self.flush_interval_s)  # fmt: skip
            return
        self._in_flight = 0
        self.stats.written += len(records)
        if self._failing_since is not None:
            log.info("lineage: the registry takes writes again after %.0f s: %d records written",
                     time.monotonic() - self._failing_since, len(records))  # fmt: skip
            self._failing_since = None
        for key, usage in list(self._usage.items()):  # forget what is written and no longer open
            if not (usage.files or usage.bytes or usage.open):
                del self._usage[key]
        self._warned_full = False

    def _take(self) -> list[tuple[Usage, LineageRecord]]:
        """The counts not yet written, as records, and zero them (on the event loop: nothing counts meanwhile)."""
        now = time.time()
        taken = []
        for usage in self._usage.values():
            if not (usage.files or usage.bytes):
                continue
            if usage.bytes and not usage.files:
                usage.last_seen = now  # still reading what it opened earlier
            taken.append((usage, LineageRecord(usage.version, "used", usage.job, usage.first_seen, usage.last_seen,
                                               usage.files, usage.bytes)))  # fmt: skip
            usage.files = usage.bytes = 0
        return taken
