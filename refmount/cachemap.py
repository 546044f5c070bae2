"""Which cached blocks belong to which versions: `cache status`, `cache evict`, and the sweep gc runs.

The cache knows blocks only by key (the pinned object identity and block geometry: see
:func:`refmount.cache.block_key`), not by version. A version's keys are computed from its entries exactly as
reads store them (:func:`refmount.reader.block_keys`) and matched against the cache's key set, read once
(:meth:`BlockCache.sizes`): one query for the whole cache instead of one per block. A block is an object's,
not a version's: two versions that reference the same object version share its blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .cache import BlockCache
from .reader import BLOCK_SIZE, block_keys
from .registry import Registry, VersionInfo


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """How much of one version the cache holds."""

    version: VersionInfo
    blocks: int  # blocks that reads of the version store
    cacheable_bytes: int  # their bytes: the version's pinned files (unpinned ones are never fetched)
    cached_blocks: int
    cached_bytes: int

    @property
    def percent(self) -> float | None:
        """Cached share of the cacheable bytes (None when the version has nothing to cache)."""
        return 100.0 * self.cached_bytes / self.cacheable_bytes if self.cacheable_bytes else None

    def to_json(self) -> dict[str, object]:
        v = self.version
        return {"name": v.qualified_name, "project": v.project, "artifact": v.artifact, "version": v.label,
                "aliases": list(v.aliases), "files": v.file_count, "bytes": v.total_size, "blocks": self.blocks,
                "cacheable_bytes": self.cacheable_bytes, "cached_blocks": self.cached_blocks,
                "cached_bytes": self.cached_bytes, "percent": self.percent}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Removed:
    """Blocks removed from the cache (or that would be, for a dry run)."""

    blocks: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CacheStatus:
    directory: str
    volume: int  # bytes on disk: blocks and index
    size_limit: int
    blocks: int
    block_bytes: int
    versions: list[VersionUsage]
    unreferenced: Removed | None  # blocks of no version in the registry (None: not every version was looked at)

    def to_json(self) -> dict[str, object]:
        unreferenced = self.unreferenced
        return {"directory": self.directory, "bytes": self.volume, "limit": self.size_limit, "blocks": self.blocks,
                "block_bytes": self.block_bytes, "versions": [usage.to_json() for usage in self.versions],
                "unreferenced": None if unreferenced is None else
                {"blocks": unreferenced.blocks, "bytes": unreferenced.bytes}}  # fmt: skip


def version_keys(registry: Registry, version: VersionInfo, prefix: str | None = None) -> Iterator[tuple[str, int]]:
    """(key, length) of every block that reads of the version's files at or under ``prefix`` store. InvalidInput
    (before anything is given) when ``prefix`` matches no file."""
    for entry in registry.entries_under(version, prefix):
        keys = block_keys(entry, BLOCK_SIZE)
        for index, key in enumerate(keys):
            yield key, min(BLOCK_SIZE, (entry.size or 0) - index * BLOCK_SIZE)


def status(cache: BlockCache, registry: Registry, versions: Iterable[VersionInfo], *,
           every_version: bool) -> CacheStatus:  # fmt: skip
    """The cache's totals and each version's share of it. ``every_version``: ``versions`` are all the registry
    holds, so the blocks of none of them can be counted too."""
    sizes = cache.sizes()
    usage, seen = [], set()
    counted: dict[str, tuple[int, int, int, int]] = {}  # per manifest: versions sharing one are counted once
    for version in versions:
        if version.manifest_id not in counted:
            blocks = cacheable = cached_blocks = cached_bytes = 0
            for key, length in version_keys(registry, version):
                blocks += 1
                cacheable += length
                if key in sizes:
                    cached_blocks += 1
                    cached_bytes += sizes[key]
                if every_version:
                    seen.add(key)
            counted[version.manifest_id] = (blocks, cacheable, cached_blocks, cached_bytes)
        usage.append(VersionUsage(version, *counted[version.manifest_id]))
    unreferenced = None
    if every_version:
        unreferenced = Removed(len(sizes.keys() - seen), sum(size for key, size in sizes.items() if key not in seen))
    return CacheStatus(str(cache.directory), cache.volume, cache.size_limit, len(sizes), sum(sizes.values()), usage,
                       unreferenced)  # fmt: skip


def evict(cache: BlockCache, registry: Registry, version: VersionInfo, prefix: str | None = None) -> Removed:
    """Drop the cached blocks of the version's files at or under ``prefix`` (shared blocks included: see the
    module). InvalidInput, with nothing removed, when ``prefix`` matches no file."""
    wanted = {key for key, _ in version_keys(registry, version, prefix)}
    return _remove(cache, {key: size for key, size in cache.sizes().items() if key in wanted}, dry_run=False)


def sweep(cache: BlockCache, keep_versions: Iterable[VersionInfo], registry: Registry, *,
          dry_run: bool = False) -> Removed:  # fmt: skip
    """Remove every cached block that belongs to no version of ``keep_versions`` (the versions still in
    ``registry``, for gc); what was removed (with ``dry_run``, what would be, removing nothing).

    Blocks stored after the cache's key set is read are kept, whatever they belong to: a mount or prefetch
    of a version logged meanwhile loses nothing. Versions sharing a manifest are read once."""
    sizes = cache.sizes()  # first: the keys of versions read below must not decide about blocks stored later
    keep: set[str] = set()
    manifests: set[str] = set()
    for version in keep_versions:
        if version.manifest_id not in manifests:
            manifests.add(version.manifest_id)
            keep.update(key for key, _ in version_keys(registry, version))
    return _remove(cache, {key: size for key, size in sizes.items() if key not in keep}, dry_run=dry_run)


def _remove(cache: BlockCache, doomed: dict[str, int], *, dry_run: bool) -> Removed:
    if dry_run:
        return Removed(len(doomed), sum(doomed.values()))
    removed = cache.delete_many(doomed)  # a block another process removed meanwhile is not counted
    return Removed(len(removed), sum(doomed[key] for key in removed))
