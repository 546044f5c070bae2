"""Checking that every pinned reference of a version still resolves to its logged object, at listing speed.

Entries whose objects share a bucket and a leading directory are checked against a listing of their
common prefix: one request per 1,000 objects (S3 ``ListObjectVersions`` when the entries name object
versions, else ``ListObjectsV2``; GCS with ``versions=true`` for generations; Azure with versions when
the entries name them; 5,000 blobs per request there), instead of one request per entry. The rest
(a lone entry in its directory, http(s), file://) get one request each, as do all entries with
``per_object=True``. A listed object is compared by the store's ``mismatch``, the comparison its
per-object check makes, so both ways report the same problems with the same words.

The rule against listing a huge bucket to check a few objects: a listing covers at most
``LISTED_PER_ENTRY`` objects (versions, on versioned listings) per entry it checks, and at least one
page. Listings come in key order, so when a listing stops there, the entries it has passed are
decided and the ones after it are checked one by one. A lone entry in its group is always checked on
its own (one request either way).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import trio

from . import stores
from .batch import Batch, batch
from .errors import RefmountError, StoreUnavailable
from .manifest import Entry
from .registry import Registry, VersionInfo
from .stores.base import Found, ListingStore, changed

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]  # entries done since the last call
LISTED_PER_ENTRY = 100
MIN_LISTED = 2


@dataclass(frozen=True)
class Problem:
    """A pinned entry that does not resolve: its path, its reference and why (one line)."""

    path: str
    ref: str
    message: str


@dataclass
class Report:
    files: int = 0
    kept: int = 0  # pinned entries that resolve to their logged objects
    unpinned: list[str] = field(default_factory=list)  # paths of entries with nothing to pin their bytes by
    problems: list[Problem] = field(default_factory=list)
    listed: int = 0  # entries decided by a listing (the others: by a request each)
    list_requests: int = 0
    object_requests: int = 0
    skipped: int = 0  # always 0: pinned entries without a size are checked too (the CLI's summary asks)

    @property
    def failures(self) -> list[str]:
        return [problem.message for problem in self.problems]

    def to_json(self) -> dict[str, object]:
        return {
            "references": self.files, "resolved": self.kept, "failed": len(self.problems),
            "unpinned": len(self.unpinned), "listed": self.listed,
            "requests": {"list": self.list_requests, "per_object": self.object_requests},
            "problems": [{"path": p.path, "ref": p.ref, "problem": p.message} for p in self.problems],
            "unpinned_paths": self.unpinned,
        }  # fmt: skip


@dataclass(frozen=True)
class _Group:
    """Entries checked by one listing: their store, bucket, listing kind and leading directory."""

    store: ListingStore
    where: Hashable
    versions: bool
    directory: str


_Member = tuple[str, Entry]  # (key in its bucket, entry)


async def verify(registry: Registry, version: VersionInfo, *, jobs: int = 16, per_object: bool = False,
                 progress: ProgressFn | None = None) -> Report:  # fmt: skip
    """Check every pinned entry (no data is read); entries that are not pinned are listed in
    ``report.unpinned``. A StoreUnavailable ends the check at once and is raised."""
    entries = await trio.to_thread.run_sync(lambda: list(registry.iter_entries(version.manifest_id)))
    report = Report(files=len(entries))
    pinned = []
    for entry in entries:
        if entry.pinned:
            pinned.append(entry)
        else:  # nothing to check it against: reported as such, never as resolving
            report.unpinned.append(entry.path)
    if progress and report.unpinned:
        progress(len(report.unpinned))
    groups, singles = ({}, pinned) if per_object else _plan(pinned)
    check = _Check(report, trio.CapacityLimiter(jobs), progress)
    async with batch() as jobs_:
        check.jobs = jobs_
        for group, members in groups.items():
            jobs_.start_soon(check.listed, group, members)
        for entry in singles:
            jobs_.start_soon(check.alone, entry)
    jobs_.raise_failure()
    return report


def _plan(entries: list[Entry]) -> tuple[dict[_Group, list[_Member]], list[Entry]]:
    """Entries grouped by the listing that can check them (each group sorted by key), and the rest."""
    groups: dict[_Group, list[_Member]] = defaultdict(list)
    singles: list[Entry] = []
    for entry in entries:
        try:
            store = stores.store_for(entry.ref)
            if not isinstance(store, ListingStore):
                singles.append(entry)
                continue
            where, key = store.locate(entry)
        except RefmountError:  # a reference no store can serve: its own check says why
            singles.append(entry)
            continue
        directory = key[: key.find("/") + 1]  # "" for keys at the top of the bucket
        groups[_Group(store, where, store.pinned_version(entry) is not None, directory)].append((key, entry))
    listed: dict[_Group, list[_Member]] = {}
    for group, members in groups.items():
        if len(members) < MIN_LISTED:
            singles.extend(entry for _, entry in members)
        else:
            listed[group] = sorted(members, key=lambda member: member[0])  # str order is UTF-8 byte order
    return listed, singles


class _Check:
    def __init__(self, report: Report, limiter: trio.CapacityLimiter, progress: ProgressFn | None) -> None:
        self.report = report
        self.limiter = limiter
        self.progress = progress
        self.jobs: Batch | None = None

    def decided(self, entry: Entry, problem: RefmountError | None) -> None:
        if problem is None:
            self.report.kept += 1
        else:
            self.report.problems.append(Problem(entry.path, entry.ref, str(problem)))
        if self.progress:
            self.progress(1)

    async def alone(self, entry: Entry) -> None:
        """One request about this entry's object (a HEAD, or what its store does instead)."""
        self.report.object_requests += 1
        try:
            await trio.to_thread.run_sync(stores.store_for(entry.ref).check, entry, limiter=self.limiter,
                                          abandon_on_cancel=True)  # fmt: skip
        except StoreUnavailable:
            raise
        except RefmountError as exc:
            self.decided(entry, exc)
            return
        self.decided(entry, None)

    async def listed(self, group: _Group, members: list[_Member]) -> None:
        """Check ``members`` (sorted by key) against a listing of their common prefix, within the budget;
        whatever the listing did not reach is checked one by one."""
        store = group.store

        def wanted(key: str, version: str | None) -> Hashable:
            return (key, version) if group.versions else key

        pinned = {wanted(key, store.pinned_version(entry)) for key, entry in members}
        seen: dict[Hashable, Found] = {}
        # Sorted: what the ends share, all do (characters, not path components: S3 prefixes are strings).
        prefix = os.path.commonprefix([members[0][0], members[-1][0]])  # noqa: RUF071
        pages: Iterator[list[Found]] = store.list_pages(group.where, prefix, versions=group.versions,
                                                        uri=members[0][1].ref)  # fmt: skip
        budget = LISTED_PER_ENTRY * len(members)
        listed, done, next_member = 0, False, 0
        try:
            while True:
                page = await trio.to_thread.run_sync(next, pages, None, limiter=self.limiter, abandon_on_cancel=True)
                if page is None:
                    done = True
                    break
                self.report.list_requests += 1
                listed += len(page)
                for found in page:
                    key = wanted(found.key, found.version_id)
                    if key in pinned:
                        seen[key] = found
                if not page:
                    continue
                # Keys before the page's last are complete (a key's versions may go on in the next page).
                last = max(found.key for found in page)
                while next_member < len(members) and members[next_member][0] < last:
                    self._compare(store, members[next_member], seen, wanted)
                    next_member += 1
                if next_member == len(members) or listed >= budget:
                    break
        except StoreUnavailable:
            raise
        except RefmountError as exc:  # this listing failed (not the store): each entry is asked about alone
            log.warning("%s; checking the %d entries it would have checked one by one", exc,
                        len(members) - next_member)  # fmt: skip
        for key, entry in members[next_member:]:
            if done:
                self._compare(store, (key, entry), seen, wanted)
            else:
                assert self.jobs is not None
                self.jobs.start_soon(self.alone, entry)

    def _compare(self, store: ListingStore, member: _Member, seen: dict[Hashable, Found],
                 wanted: Callable[[str, str | None], Hashable]) -> None:  # fmt: skip
        key, entry = member
        why = store.mismatch(entry, seen.get(wanted(key, store.pinned_version(entry))))
        self.report.listed += 1
        self.decided(entry, None if why is None else changed(entry, why))
