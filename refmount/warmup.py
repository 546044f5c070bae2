"""Filling a node's disk cache before a job needs it (``refmount cache prefetch``).

The blocks of a version's files that the cache lacks are fetched through the reader, with its pins, its
single flight and its claims across processes: a mount using the same cache directory meanwhile waits for
a block being fetched here instead of fetching it again, and afterwards serves every block without a store
request. Blocks already cached are skipped, so an interrupted prefetch resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .batch import batch
from .cache import BlockCache
from .errors import RefmountError, StoreUnavailable, about
from .manifest import Entry
from .reader import Reader, block_keys, open_reader
from .registry import Registry, VersionInfo

ProgressFn = Callable[[int], None]


@dataclass
class WarmupReport:
    files: int = 0  # the files chosen (under the path prefix)
    cached: int = 0  # blocks that were in the cache already
    fetched: int = 0  # blocks fetched now
    bytes: int = 0  # bytes fetched now
    skipped: int = 0  # pinned files without a size (nothing says how many bytes to fetch)
    unpinned: list[str] = field(default_factory=list)  # never served, so never fetched
    failures: list[str] = field(default_factory=list)


async def prefetch(registry: Registry, version: VersionInfo, cache: BlockCache, *, prefix: str | None = None,
                   jobs: int = 32, progress: ProgressFn | None = None) -> WarmupReport:  # fmt: skip
    """Fetch into ``cache`` every block it lacks of the version's files under ``prefix``; ``progress`` gets
    the bytes of each file as it is done (fetched or found cached)."""
    chosen = await trio.to_thread.run_sync(lambda: list(registry.entries_under(version, prefix)))
    report = WarmupReport(files=len(chosen))
    limiter = trio.CapacityLimiter(jobs)

    async def one(entry: Entry, missing: list[int]) -> None:
        async with limiter:
            try:
                for index in missing:
                    await reader.block(entry, index)  # stored by the reader's write-back
            except StoreUnavailable:
                raise  # not about this file: it ends the prefetch
            except RefmountError as exc:
                report.failures.append(about(entry.path, exc))
        if progress:
            progress(entry.size or 0)

    async with open_reader(cache) as reader, batch() as files:
        wanted = []
        for entry in chosen:
            if not entry.pinned:
                report.unpinned.append(entry.path)
            elif entry.size is None:
                report.skipped += 1
            elif entry.size > 0:
                wanted.append(entry)
        # One pass over the cache's index for every block (a worker thread per file costs more than its lookups).
        for entry, missing in await trio.to_thread.run_sync(_missing_blocks, wanted, reader, cache):
            report.cached += reader.blocks(entry) - len(missing)
            if missing:
                files.start_soon(one, entry, missing)
            elif progress:
                progress(entry.size or 0)
    files.raise_failure()
    # What the store sent; a block another process (a mount) was fetching meanwhile was found in the cache after it.
    report.fetched, report.bytes = reader.stats.fetches, reader.stats.fetched_bytes
    report.cached += reader.stats.disk_hits
    return report


def _missing_blocks(entries: list[Entry], reader: Reader, cache: BlockCache) -> list[tuple[Entry, list[int]]]:
    keys = [block_keys(entry, reader.block_size) for entry in entries]
    present = cache.present([key for of_entry in keys for key in of_entry])
    return [(entry, [i for i, key in enumerate(of_entry) if key not in present])
            for entry, of_entry in zip(entries, keys, strict=True)]  # fmt: skip
