"""What every registry backend offers: the metadata of projects, artifacts, versions and aliases.

Callers (CLI, API, daemon) only see this interface, so the embedded SQLite registry and a shared
database behave the same. Manifests are stored once per content and kept as a tree of *nodes*
(directories and files) so that one directory of a version with millions of entries can be
listed without loading the rest.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput, NotFound
from ..jobs import Job
from ..manifest import Entry, Manifest, is_under


class NoRegistry(NotFound):
    """The URL names no registry yet. Only commands that write (log, import, ``registry init``,
    the target of ``registry copy``) create one, so that a mistyped URL cannot turn into an empty registry."""

    def __init__(self, where: str):
        super().__init__(f"no registry at {where} (log a version first, or run `refmount registry init`)")


@dataclass(frozen=True, slots=True)
class VersionInfo:
    project: str
    artifact: str
    type: str
    index: int
    digest: str  # W&B artifact digest
    manifest_id: str  # content id of the stored manifest (Manifest.content_id)
    created_at: float  # unix time
    file_count: int
    total_size: int
    description: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    expires_at: float | None = None  # unix time its TTL ends (None: kept until deleted)
    linked_from: str | None = None  # a collection version: the version it links (project/artifact:vN)

    @property
    def label(self) -> str:
        return f"v{self.index}"

    @property
    def qualified_name(self) -> str:
        return f"{self.project}/{self.artifact}:v{self.index}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.qualified_name,
            "project": self.project,
            "artifact": self.artifact,
            "type": self.type,
            "version": self.label,
            "index": self.index,
            "digest": self.digest,
            "manifest_id": self.manifest_id,
            "created_at": self.created_at,
            "files": self.file_count,
            "bytes": self.total_size,
            "description": self.description,
            "metadata": dict(self.metadata),
            "aliases": list(self.aliases),
            "expires_at": self.expires_at,
            "linked_from": self.linked_from,
        }


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    project: str
    name: str
    type: str
    version_count: int
    latest_index: int | None


@dataclass(frozen=True, slots=True)
class LogResult:
    version: VersionInfo
    created: bool  # False: the content equals the current latest, no new version


@dataclass(frozen=True, slots=True)
class LinkResult:
    version: VersionInfo  # the collection's version
    created: bool  # False: the collection had the manifest as a live version already (only aliases moved)


@dataclass(frozen=True, slots=True)
class Deletion:
    version: str  # project/artifact:vN
    dropped_aliases: tuple[str, ...]  # user aliases removed with it (--force)
    was_latest: bool
    latest: int | None  # where latest points now (None: no version left)


@dataclass(frozen=True, slots=True)
class Collected:
    """What ``gc`` removed (or, in a dry run, would remove)."""

    versions: tuple[tuple[str, str], ...]  # (project/artifact:vN, "deleted" or "expired")
    manifests: tuple[tuple[str, int], ...]  # (content id, file count)


@dataclass(frozen=True, slots=True)
class LineageRecord:
    """A job that produced (``log --run``) or used (opened files of, ``use_artifact``) a version, on one host."""

    version: str  # project/artifact:vN
    role: str  # "produced" or "used"
    job: Job
    first_seen: float  # unix times
    last_seen: float
    files: int = 0  # files opened through a mount
    bytes: int = 0  # bytes the mount served (reads the kernel's page cache answered never reach it)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "role": self.role, "job": self.job.name, "kind": self.job.kind,
                "id": self.job.id, "host": self.job.host, "uid": self.job.uid, "detail": dict(self.job.detail),
                "first_seen": self.first_seen, "last_seen": self.last_seen, "files": self.files,
                "bytes": self.bytes}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Node:
    """A directory or file of a stored manifest; ``id`` is stable for the manifest's lifetime."""

    id: int
    name: str
    is_dir: bool
    entry: Entry | None = None  # files only


class ManifestIndex(abc.ABC):
    """Directory-wise access to one stored manifest, for the daemon (cheap per call)."""

    @property
    @abc.abstractmethod
    def root_id(self) -> int: ...

    @abc.abstractmethod
    def child(self, parent_id: int, name: str) -> Node | None: ...

    @abc.abstractmethod
    def children(self, parent_id: int, after_id: int = 0, limit: int = 1000) -> list[Node]:
        """Children in ascending id order with id > ``after_id`` (a readdir cursor)."""

    @abc.abstractmethod
    def listing(self, parent_id: int, after_id: int = 0, limit: int = 1000) -> list[tuple[int, str, bool, int | None]]:
        """Like :meth:`children`, but only (id, name, is_dir, size): what a directory listing needs. A file that
        cannot be served (no size, or nothing pins its bytes: see :attr:`Entry.pinned`) has size None."""

    @abc.abstractmethod
    def node(self, node_id: int) -> Node | None: ...

    @abc.abstractmethod
    def parent(self, node_id: int) -> Node | None:
        """The directory holding ``node_id`` (None for the root, or a node not in this manifest)."""

    @abc.abstractmethod
    def entry(self, path: str) -> Entry | None: ...


class Registry(abc.ABC):
    url: str

    # -- writing -------------------------------------------------------------------------------
    @abc.abstractmethod
    def log_version(
        self,
        project: str,
        artifact: str,
        manifest: Manifest,
        *,
        type: str,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        ttl: float | None = None,
        run: Job | None = None,
    ) -> LogResult:
        """In one transaction: the next ``vN`` with ``latest`` moved to it, unless the artifact
        digest equals the current latest's and so do the content MD5s that pin entries whose digest is
        their URL (then only ``aliases`` are applied to it). ``ttl``: seconds the new version lives;
        ``run``: the job that produced it (recorded in lineage, for the version returned)."""

    @abc.abstractmethod
    def copy_version(self, version: VersionInfo, manifest: Manifest) -> bool:
        """Store ``version`` (from another registry) under its own index, with its created time and
        metadata; False if it is already here with the same digest, InvalidInput if with another."""

    @abc.abstractmethod
    def set_alias(self, project: str, artifact: str, alias: str, index: int) -> None: ...

    @abc.abstractmethod
    def delete_alias(self, project: str, artifact: str, alias: str, *, only_at: int | None = None) -> None:
        """Remove ``alias``; with ``only_at``, only while it points at that version index (in the same
        transaction: an alias someone moved meanwhile stays)."""

    # -- collections (see registry/links.py) ----------------------------------------------------
    @abc.abstractmethod
    def link_version(
        self,
        project: str,
        artifact: str,
        label: str,
        collection_project: str,
        collection: str,
        *,
        aliases: Sequence[str] = (),
    ) -> LinkResult:
        """In one transaction: link the live version ``label`` of ``project/artifact`` into the collection
        (a ``wandb-registry-*`` project), as its next ``vN`` sharing the stored manifest, with ``latest`` and
        ``aliases`` on it; a manifest the collection has as a live version already only gets ``aliases``."""

    @abc.abstractmethod
    def unlink_version(self, project: str, artifact: str, label: str) -> Deletion:
        """Remove the link ``label`` (a version or alias) from its collection as ``delete_version(force=True)``
        does; refused for a version that is not a link."""

    @abc.abstractmethod
    def links_to(self, project: str, artifact: str) -> dict[int, tuple[str, ...]]:
        """Version index of ``project/artifact`` -> the live collection versions that link it."""

    # -- lineage (see registry/lineage.py) -------------------------------------------------------
    @abc.abstractmethod
    def record_lineage(self, records: Sequence[LineageRecord]) -> None:
        """Add ``records`` in one transaction: counts add up, first and last seen widen."""

    @abc.abstractmethod
    def lineage(self, *, versions: Sequence[str] = (), job_id: str | None = None) -> list[LineageRecord]:
        """What is recorded of ``versions`` (``project/artifact:vN``), or of the job ``job_id``."""

    # -- retention -----------------------------------------------------------------------------
    @abc.abstractmethod
    def set_ttl(self, project: str, artifact: str, index: int, ttl: float | None) -> VersionInfo:
        """Version ``index`` expires ``ttl`` seconds after its creation (None: never); refused if it was deleted."""

    @abc.abstractmethod
    def delete_version(self, project: str, artifact: str, index: int, *, force: bool = False) -> Deletion:
        """Hide version ``index`` from every reader until ``collect``; refused while a user alias points at it
        unless ``force`` (which removes those aliases); ``latest`` moves to the newest live version left."""

    @abc.abstractmethod
    def collect(self, *, dry_run: bool = False) -> Collected:
        """Remove the rows of deleted and expired versions, their aliases, and the stored manifests that no
        remaining version uses, in one transaction that keeps writers out (``dry_run``: remove nothing)."""

    @abc.abstractmethod
    def live_manifest_ids(self) -> set[str]:
        """The content ids of the stored manifests that live versions use."""

    # -- reading -------------------------------------------------------------------------------
    @abc.abstractmethod
    def projects(self) -> list[str]: ...

    @abc.abstractmethod
    def schemes(self) -> set[str]:
        """The URI schemes (``s3``, ``file``, ...) the entries of every version reference, lower-case."""

    @abc.abstractmethod
    def artifacts(self, project: str) -> list[ArtifactInfo]: ...

    @abc.abstractmethod
    def versions(self, project: str, artifact: str) -> list[VersionInfo]: ...

    @abc.abstractmethod
    def resolve(self, project: str, artifact: str, label: str) -> VersionInfo:
        """``vN`` or an alias -> the version; NotFound with a one-line message otherwise."""

    @abc.abstractmethod
    def aliases(self, project: str, artifact: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def iter_entries(self, manifest_id: str) -> Iterator[Entry]:
        """All entries of a stored manifest, in path order, without loading them all at once."""

    def entries_under(self, version: VersionInfo, prefix: str | None) -> Iterator[Entry]:
        """The version's entries at or under the directory (or file) ``prefix``, streamed; InvalidInput, before
        any entry is given, when a prefix matches none."""
        entries = (entry for entry in self.iter_entries(version.manifest_id) if is_under(entry.path, prefix))
        first = next(entries, None)
        if first is None and prefix:
            raise InvalidInput(f"no file of {version.qualified_name} is at or under {prefix!r}")
        if first is not None:
            yield first
            yield from entries

    @abc.abstractmethod
    def manifest_index(self, manifest_id: str) -> ManifestIndex:
        """Directory-wise access to a stored manifest (a network registry may first copy it locally)."""

    @abc.abstractmethod
    def manifest_root(self, manifest_id: str) -> int:
        """The id of a stored manifest's root directory node: cheap, whatever the manifest's size."""

    def manifest(self, manifest_id: str) -> Manifest:
        return Manifest(self.iter_entries(manifest_id))

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""
