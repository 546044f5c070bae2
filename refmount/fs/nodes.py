"""What an inode of the mount is: one of a few kinds of node, each a small immutable value.

Above versions (few, numbered by the namespace as they are first seen):
    Root                    /
    ProjectDir              /<project>
    ArtifactDir             /<project>/<artifact>
    AliasLink               /<project>/<artifact>/<alias>  -> v<N>   (a symlink)
Inside a version (numbered ``slot << 40 | node id``: nothing is stored per entry):
    VersionNode             /<project>/<artifact>/v<N>[/<path>]      (a directory or a file)

An alias link is one node per (alias, target): when an alias moves, its name leads to a new inode,
so whatever the kernel cached for the old target (the link's text included) is never shown for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from ..manifest import Entry
from ..registry import ManifestIndex, Node, VersionInfo

SLOT_SHIFT = 40
NODE_MASK = (1 << SLOT_SHIFT) - 1
ROOT_INODE = 1


@dataclass(frozen=True, slots=True)
class Root:
    pass


@dataclass(frozen=True, slots=True)
class ProjectDir:
    project: str


@dataclass(frozen=True, slots=True)
class ArtifactDir:
    project: str
    artifact: str


@dataclass(frozen=True, slots=True)
class AliasLink:
    project: str
    artifact: str
    alias: str
    target: int  # the version index the alias pointed at when looked up

    @property
    def text(self) -> str:
        """What the symlink says: a sibling version directory."""
        return f"v{self.target}"


NamespaceNode = Root | ProjectDir | ArtifactDir | AliasLink


@dataclass(eq=False)
class VersionSlot:
    """A version the mount has resolved, numbered per mount. Its manifest index is fetched on the first
    look inside it (a network registry copies the manifest to local disk then): listing an artifact's
    versions costs nothing per version. Once fetched, the index is local, so the version keeps working
    offline."""

    slot: int
    version: VersionInfo
    root_id: int
    loaded: ManifestIndex | None = None  # see Namespace.index()
    loading: trio.Lock = field(default_factory=trio.Lock)

    @property
    def root(self) -> Node:
        return Node(self.root_id, "", True)

    def inode(self, node_id: int) -> int:
        return self.slot << SLOT_SHIFT | node_id

    @property
    def mtime_ns(self) -> int:
        return int(self.version.created_at * 1e9)


@dataclass(frozen=True, slots=True)
class VersionNode:
    slot: VersionSlot
    node: Node

    @property
    def inode(self) -> int:
        return self.slot.inode(self.node.id)

    @property
    def entry(self) -> Entry | None:
        return self.node.entry

    @property
    def is_dir(self) -> bool:
        return self.node.is_dir


FsNode = NamespaceNode | VersionNode
