"""What the mount shows: which nodes exist (projects, artifacts, versions, aliases, paths inside
versions), their inode numbers, and the registry answers behind them.

Inodes above versions are numbered from a counter as nodes are first seen (there are few); inside a
version they are ``slot << 40 | node id``, where the slot is a small per-mount number for a version
and the node id comes from the registry's manifest index: nothing is kept per entry, so memory
grows with the versions opened, not with their files. The few thousand nodes looked up last are
kept, since a file's lookup is followed at once by its read (and a directory is the parent of many
lookups): each would otherwise be a query of the index. So are the entries of the directories being
looked up in most (up to DIRECTORY_NAMES in all): a training epoch looks up every file of a few directories.

Registry answers are cached for ``alias_ttl`` seconds; registry calls run in worker threads so a
slow or unreachable database never blocks the daemon's event loop. While the registry is down,
answers obtained before keep being served and only lookups never made before fail (EIO).

A registry may be damaged or hostile: a name that ``log`` would refuse (see :func:`refmount.manifest.
path_component_problem` and :func:`refmount.names.name_problem`) is never listed or resolved.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from ..errors import NotFound
from ..manifest import path_component_problem
from ..names import name_problem, version_index
from ..registry import ManifestIndex, Node, Registry, VersionInfo
from ..registry.url import redact
from .nodes import (
    NODE_MASK,
    ROOT_INODE,
    SLOT_SHIFT,
    AliasLink,
    ArtifactDir,
    FsNode,
    NamespaceNode,
    ProjectDir,
    Root,
    VersionNode,
    VersionSlot,
)

log = logging.getLogger(__name__)

RECENT_NODES = 4096
DIRECTORY_NAMES = 50_000  # entries of version directories kept whole, in all (a few hundred bytes each)
# A listing costs about 5 us per entry against 10 us per lookup by name, and holds the event loop while it
# runs: a directory is listed once it has seen a few lookups, and only up to 10 ms's worth of entries.
LIST_AFTER = 8  # lookups in a directory before it is listed whole
WHOLE_DIRECTORY = 2_000  # a directory with more entries is looked up name by name
_WARNED_NAMES = 1000  # invalid names reported once each, up to this many

T = TypeVar("T")


class RegistryDown(Exception):
    """The registry could not answer; the operation fails with EIO, the daemon carries on."""


@dataclass(frozen=True)
class ArtifactView:
    versions: dict[int, VersionInfo]
    aliases: dict[str, int]


class DirectoryNames:
    """Version directories' entries by name, kept whole once a directory has seen LIST_AFTER lookups: a dict
    then answers each lookup, without a query of the index (whose SQLite call lets the event loop's
    thread wait behind the worker threads for the GIL). The directories used least recently go first."""

    def __init__(self, limit: int = DIRECTORY_NAMES, whole: int = WHOLE_DIRECTORY):
        self._names: collections.OrderedDict[int, dict[str, Node]] = collections.OrderedDict()
        self._lookups: collections.OrderedDict[int, int] = collections.OrderedDict()  # -1: too large to keep
        self._entries, self.limit, self.whole = 0, limit, whole

    def get(self, directory: int) -> dict[str, Node] | None:
        """The entries of the directory (by its inode), if kept."""
        names = self._names.get(directory)
        if names is not None:
            self._names.move_to_end(directory)
        return names

    def worth_listing(self, directory: int) -> bool:
        """Count a lookup in the directory; whether to list it whole now (at its LIST_AFTER-th)."""
        lookups = self._lookups.pop(directory, 0)
        if lookups >= 0:
            lookups += 1
        self._lookups[directory] = lookups  # the most recent last: the least recent are forgotten first
        if len(self._lookups) > RECENT_NODES:
            self._lookups.popitem(last=False)
        return lookups == LIST_AFTER

    def keep(self, directory: int, nodes: list[Node]) -> dict[str, Node] | None:
        """Keep a directory's listing (at most ``whole`` + 1 entries, to tell a large one); None: too large."""
        if len(nodes) > self.whole:
            self._lookups[directory] = -1
            return None
        names = self._names[directory] = {node.name: node for node in nodes}
        self._entries += len(names)
        while self._entries > self.limit and len(self._names) > 1:
            dropped, old = self._names.popitem(last=False)
            self._entries -= len(old)
            self._lookups.pop(dropped, None)  # counted afresh: listed again if lookups there go on
        return names


class Namespace:
    def __init__(self, registry: Registry, alias_ttl: float):
        self.registry = registry
        self.alias_ttl = alias_ttl
        self._nodes: dict[int, NamespaceNode] = {ROOT_INODE: Root()}
        self._inodes: dict[NamespaceNode, int] = {Root(): ROOT_INODE}
        self._answers: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._slots: dict[int, VersionSlot] = {}
        self._slot_of: dict[tuple[str, str, int], int] = {}
        self._recent: collections.OrderedDict[int, VersionNode] = collections.OrderedDict()
        self._directories = DirectoryNames()
        self._warned: set[str] = set()
        self._registry_ok = True
        self.registry_requests = self.registry_errors = 0  # questions asked of the registry; those that failed

    # -- inodes -------------------------------------------------------------------------------------
    def inode(self, node: FsNode) -> int:
        if isinstance(node, VersionNode):
            return node.inode
        inode = self._inodes.get(node)
        if inode is None:
            inode = self._inodes[node] = len(self._inodes) + 1
            self._nodes[inode] = node
        return inode

    async def resolve(self, inode: int) -> FsNode | None:
        """The node behind ``inode``: None if this mount never handed it out."""
        if inode >> SLOT_SHIFT == 0:
            return self._nodes.get(inode)
        found = self._recent.get(inode)
        if found is not None:
            self._recent.move_to_end(inode)
            return found
        slot = self._slots.get(inode >> SLOT_SHIFT)
        if slot is None:
            return None
        node_id = inode & NODE_MASK
        if node_id == slot.root_id:
            return VersionNode(slot, slot.root)  # a stat of `vN` needs no index (nor, on a network registry, its copy)
        node = (await self.index(slot)).node(node_id)
        return None if node is None else self._remember(VersionNode(slot, node))

    # -- what is where ------------------------------------------------------------------------------
    async def child(self, parent: FsNode, name: str) -> FsNode | None:
        """The node called ``name`` in the directory ``parent``, None if there is none (or not a directory)."""
        if isinstance(parent, VersionNode):
            if not parent.is_dir or self.invalid_path_name(name):
                return None
            node = await self._version_child(parent, name)
            return None if node is None else self._remember(VersionNode(parent.slot, node))
        if self._invalid(name, name_problem(name)):
            return None
        if isinstance(parent, Root):
            return ProjectDir(name) if name in await self.projects() else None
        if isinstance(parent, ProjectDir):
            return ArtifactDir(parent.project, name) if name in await self.artifacts(parent.project) else None
        if isinstance(parent, ArtifactDir):
            return await self._label(parent, name)
        return None

    async def _version_child(self, parent: VersionNode, name: str) -> Node | None:
        names = self._directories.get(parent.inode)
        if names is None:
            index = await self.index(parent.slot)
            if self._directories.worth_listing(parent.inode):
                listing = index.children(parent.node.id, limit=self._directories.whole + 1)
                names = self._directories.keep(parent.inode, listing)
            if names is None:
                return index.child(parent.node.id, name)
        return names.get(name)

    async def children(self, parent: NamespaceNode) -> list[tuple[str, FsNode]]:
        """The listing of a directory above versions, in a stable order (names that cannot be shown left out)."""
        if isinstance(parent, Root):
            names = await self.projects()
            return [(name, ProjectDir(name)) for name in names if not self._invalid(name, name_problem(name))]
        if isinstance(parent, ProjectDir):
            names = await self.artifacts(parent.project)
            return [(name, ArtifactDir(parent.project, name)) for name in names
                    if not self._invalid(name, name_problem(name))]  # fmt: skip
        if isinstance(parent, ArtifactDir):
            view = await self.artifact(parent.project, parent.artifact)
            if view is None:
                return []
            out: list[tuple[str, FsNode]] = []
            for index in sorted(view.versions):
                slot = await self.version_slot(view.versions[index])
                out.append((f"v{index}", VersionNode(slot, slot.root)))
            for alias in sorted(view.aliases):
                if not self._invalid(alias, name_problem(alias)):
                    out.append((alias, AliasLink(parent.project, parent.artifact, alias, view.aliases[alias])))
            return out
        return []

    async def parent(self, directory: FsNode) -> FsNode:
        """The directory holding ``directory`` (what its ``..`` is); the root's is the root itself, since
        what lies above the mountpoint is not this file system's to name."""
        if isinstance(directory, VersionNode):
            slot = directory.slot
            node = None if directory.node.id == slot.root_id else (await self.index(slot)).parent(directory.node.id)
            if node is not None:
                return self._remember(VersionNode(slot, node))
            return ArtifactDir(slot.version.project, slot.version.artifact)  # above a version's root
        if isinstance(directory, ArtifactDir):
            return ProjectDir(directory.project)
        return Root()

    async def _label(self, parent: ArtifactDir, label: str) -> FsNode | None:
        view = await self.artifact(parent.project, parent.artifact)
        if view is None:
            return None
        index = version_index(label)
        if index is not None:
            version = view.versions.get(index)
            if version is None:
                return None
            slot = await self.version_slot(version)
            return VersionNode(slot, slot.root)
        target = view.aliases.get(label)
        return None if target is None else AliasLink(parent.project, parent.artifact, label, target)

    def invalid_path_name(self, name: str) -> bool:
        """Is ``name`` (a child inside a version) one that logging would refuse? (Then it is not shown.)"""
        return self._invalid(name, path_component_problem(name))

    def _invalid(self, name: str, problem: str | None) -> bool:
        if problem is not None and name not in self._warned and len(self._warned) < _WARNED_NAMES:
            self._warned.add(name)
            log.warning("not showing the invalid name %r from the registry: it %s", name, problem)
        return problem is not None

    # -- versions -----------------------------------------------------------------------------------
    async def index(self, slot: VersionSlot) -> ManifestIndex:
        """The version's manifest index, fetched (once, whoever else is waiting for it) on first use."""
        if slot.loaded is None:
            async with slot.loading:
                if slot.loaded is None:
                    slot.loaded = await self._ask(lambda: self.registry.manifest_index(slot.version.manifest_id))
        return slot.loaded

    async def version_slot(self, version: VersionInfo) -> VersionSlot:
        key = (version.project, version.artifact, version.index)
        number = self._slot_of.get(key)
        if number is None:
            root_id = await self._ask(lambda: self.registry.manifest_root(version.manifest_id))
            number = self._slot_of.get(key)  # another request may have resolved it meanwhile
            if number is None:
                number = self._slot_of[key] = len(self._slot_of) + 1
                self._slots[number] = VersionSlot(number, version, root_id)
        return self._slots[number]

    def _remember(self, node: VersionNode) -> VersionNode:
        self._recent[node.inode] = node
        if len(self._recent) > RECENT_NODES:
            self._recent.popitem(last=False)
        return node

    # -- registry answers, cached for alias_ttl ------------------------------------------------------
    async def projects(self) -> list[str]:
        return await self._cached(("projects",), self.registry.projects)

    async def artifacts(self, project: str) -> list[str]:
        def names() -> list[str]:
            try:
                return [a.name for a in self.registry.artifacts(project)]
            except NotFound:
                return []

        return await self._cached(("artifacts", project), names)

    async def artifact(self, project: str, artifact: str) -> ArtifactView | None:
        def view() -> ArtifactView | None:
            try:
                versions = self.registry.versions(project, artifact)
            except NotFound:
                return None
            return ArtifactView({v.index: v for v in versions}, self.registry.aliases(project, artifact))

        return await self._cached(("artifact", project, artifact), view)

    def forget_answers(self) -> list[tuple[int, str]]:
        """Drop every cached registry answer (a reload: registry changes show at once); returns the alias names
        handed out so far as (directory inode, name), whose kernel entries may point at a moved alias."""
        self._answers.clear()
        return sorted({(self.inode(ArtifactDir(node.project, node.artifact)), node.alias)
                       for node in list(self._nodes.values()) if isinstance(node, AliasLink)})  # fmt: skip

    async def _cached(self, key: tuple[Any, ...], fetch: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._answers.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            value = await self._ask(fetch)
        except RegistryDown:
            if hit is None:
                raise
            return hit[1]  # keep serving what was resolved before the outage
        self._answers[key] = (now + self.alias_ttl, value)
        return value

    async def _ask(self, fetch: Callable[[], T]) -> T:
        self.registry_requests += 1
        try:
            value = await trio.to_thread.run_sync(fetch)
        except Exception as exc:  # any registry failure (driver errors included) is an outage here
            self.registry_errors += 1
            if self._registry_ok:
                log.error("registry %s is unavailable, new lookups fail with EIO until it is back: %s",
                          redact(self.registry.url), exc)  # fmt: skip
                self._registry_ok = False
            raise RegistryDown(str(exc)) from exc
        if not self._registry_ok:
            log.warning("registry %s is reachable again", redact(self.registry.url))
            self._registry_ok = True
        return value
