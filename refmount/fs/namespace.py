"""What the mount shows: projects, artifacts, versions and aliases, and the inode numbers for them.

Two kinds of inodes:
- the namespace above versions (projects, artifacts, alias symlinks): few, numbered from a counter;
- everything inside a version: ``slot << 40 | node id``, where the slot is a small per-mount number
  for a version and the node id comes from the registry's manifest index. Nothing is kept per entry,
  so memory does not grow with the files of a version, only with the versions that were opened.

The few thousand nodes looked up last are kept, since a file's lookup is followed at once by its
open (and a directory is the parent of many lookups): each would otherwise be a query of the index.

Registry answers are cached for ``alias_ttl`` seconds; registry calls run in worker threads so a
slow or unreachable database never blocks the daemon's event loop. While the registry is down,
answers obtained before keep being served and only lookups never made before fail (EIO).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..errors import NotFound
from ..names import version_index
from ..registry import ManifestIndex, Node, Registry, VersionInfo

log = logging.getLogger(__name__)

SLOT_SHIFT = 40
NODE_MASK = (1 << SLOT_SHIFT) - 1
ROOT_INODE = 1
RECENT_NODES = 4096

T = TypeVar("T")


class RegistryDown(Exception):
    """The registry could not answer; the operation fails with EIO, the daemon carries on."""


@dataclass(frozen=True)
class ArtifactView:
    versions: dict[int, VersionInfo]
    aliases: dict[str, int]


@dataclass(eq=False)
class VersionSlot:
    """A version the mount has resolved. Its manifest index is fetched on the first look inside it (a
    network registry copies the manifest to local disk then): listing an artifact's versions costs
    nothing per version. Once fetched, the index is local, so the version keeps working offline."""

    slot: int
    version: VersionInfo
    root_id: int
    loaded: ManifestIndex | None = None  # see Namespace.index()
    loading: trio.Lock = field(default_factory=trio.Lock)

    @property
    def root(self) -> Node:
        return Node(self.root_id, "", True)

    @property
    def root_inode(self) -> int:
        return self.inode(self.root_id)

    def inode(self, node_id: int) -> int:
        return self.slot << SLOT_SHIFT | node_id


class Namespace:
    def __init__(self, registry: Registry, alias_ttl: float):
        self.registry = registry
        self.alias_ttl = alias_ttl
        self._paths: dict[int, tuple[str, ...]] = {ROOT_INODE: ()}
        self._inodes: dict[tuple[str, ...], int] = {(): ROOT_INODE}
        self._answers: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._slots: dict[int, VersionSlot] = {}
        self._slot_of: dict[tuple[str, str, int], int] = {}
        self._recent: collections.OrderedDict[int, tuple[VersionSlot, Node]] = collections.OrderedDict()
        self._registry_ok = True

    # -- inode numbers ----------------------------------------------------------------------------
    def inode_of(self, path: tuple[str, ...]) -> int:
        inode = self._inodes.get(path)
        if inode is None:
            inode = self._inodes[path] = len(self._inodes) + 1
            self._paths[inode] = path
        return inode

    def path_of(self, inode: int) -> tuple[str, ...] | None:
        return self._paths.get(inode)

    def slot_of(self, inode: int) -> VersionSlot | None:
        return self._slots.get(inode >> SLOT_SHIFT)

    @staticmethod
    def node_id(inode: int) -> int:
        return inode & NODE_MASK

    @staticmethod
    def in_version(inode: int) -> bool:
        return inode >> SLOT_SHIFT > 0

    async def node(self, inode: int) -> tuple[VersionSlot, Node] | None:
        found = self._recent.get(inode)
        if found is not None:
            self._recent.move_to_end(inode)
            return found
        slot = self.slot_of(inode)
        if slot is None:
            return None
        if self.node_id(inode) == slot.root_id:
            return slot, slot.root  # a stat of `vN` needs no index (nor, on a network registry, its copy)
        node = (await self.index(slot)).node(self.node_id(inode))
        return None if node is None else self._remember(slot, node)

    async def index(self, slot: VersionSlot) -> ManifestIndex:
        """The version's manifest index, fetched (once, whoever else is waiting for it) on first use."""
        if slot.loaded is None:
            async with slot.loading:
                if slot.loaded is None:
                    slot.loaded = await self._ask(lambda: self.registry.manifest_index(slot.version.manifest_id))
        return slot.loaded

    async def child(self, slot: VersionSlot, parent: Node, name: str) -> Node | None:
        node = (await self.index(slot)).child(parent.id, name)
        if node is not None:
            self._remember(slot, node)
        return node

    def _remember(self, slot: VersionSlot, node: Node) -> tuple[VersionSlot, Node]:
        found = self._recent[slot.inode(node.id)] = (slot, node)
        if len(self._recent) > RECENT_NODES:
            self._recent.popitem(last=False)
        return found

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

    async def resolve_label(self, project: str, artifact: str, label: str) -> VersionInfo | str | None:
        """``vN`` -> the version; an alias -> its target label (``v2``); else None."""
        view = await self.artifact(project, artifact)
        if view is None:
            return None
        index = version_index(label)
        if index is not None:
            return view.versions.get(index)
        target = view.aliases.get(label)
        return None if target is None else f"v{target}"

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
        try:
            value = await trio.to_thread.run_sync(fetch)
        except Exception as exc:  # any registry failure (driver errors included) is an outage here
            if self._registry_ok:
                log.error("registry %s is unavailable, new lookups fail with EIO until it is back: %s",
                          self.registry.url, exc)  # fmt: skip
                self._registry_ok = False
            raise RegistryDown(str(exc)) from exc
        if not self._registry_ok:
            log.warning("registry %s is reachable again", self.registry.url)
            self._registry_ok = True
        return value
