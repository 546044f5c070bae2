"""The namespace's memory of recently looked-up nodes, as a unit over a real SQLite registry."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import trio

import refmount
from refmount.fs import namespace
from refmount.fs.namespace import Namespace, VersionSlot
from refmount.registry import ManifestIndex, Node, Registry, open_registry


class CountingIndex:
    """A real manifest index that counts the queries made of it."""

    def __init__(self, index: ManifestIndex):
        self._index = index
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._index, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args)

        return counted


class CountingRegistry:
    def __init__(self, registry: Registry):
        self._registry = registry
        self.indexes: list[CountingIndex] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)

    def manifest_index(self, manifest_id: str) -> CountingIndex:
        self.indexes.append(CountingIndex(self._registry.manifest_index(manifest_id)))
        return self.indexes[-1]


@pytest.fixture
def logged(tmp_path: Path, registry_url: str) -> CountingRegistry:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (data / name).write_text(name)
    art = refmount.Artifact("files", type="dataset")
    art.add_reference(data.as_uri())
    refmount.log_artifact(art, project="proj", registry=registry_url)
    return CountingRegistry(open_registry(registry_url))


def version_root(ns: Namespace) -> tuple[VersionSlot, Node]:
    async def resolve() -> VersionSlot:
        version = await ns.resolve_label("proj", "files", "v0")
        assert version is not None and not isinstance(version, str)
        return await ns.version_slot(version)

    slot = trio.run(resolve)
    found = node(ns, slot.root_inode)
    assert found is not None
    return found


def node(ns: Namespace, inode: int) -> tuple[VersionSlot, Node] | None:
    return trio.run(ns.node, inode)


def child(ns: Namespace, slot: VersionSlot, parent: Node, name: str) -> Node | None:
    return trio.run(ns.child, slot, parent, name)


def test_a_version_root_needs_no_index(logged: CountingRegistry) -> None:
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    slot, root = version_root(ns)
    assert root.is_dir and root.id == slot.root_id
    assert not logged.indexes  # a stat of vN fetches (on PostgreSQL: copies) no manifest


def test_a_looked_up_file_is_opened_without_asking_the_index_again(logged: CountingRegistry) -> None:
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    slot, root = version_root(ns)
    found = child(ns, slot, root, "b.txt")
    assert found is not None and found.entry is not None and found.entry.path == "b.txt"
    assert child(ns, slot, root, "missing.txt") is None
    assert node(ns, slot.inode(found.id)) == (slot, found)
    assert len(logged.indexes) == 1 and logged.indexes[0].calls == {"child": 2}


def test_only_the_most_recent_nodes_are_kept(logged: CountingRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespace, "RECENT_NODES", 2)
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    slot, root = version_root(ns)
    a, b, c = (child(ns, slot, root, name) for name in ("a.txt", "b.txt", "c.txt"))  # a is forgotten
    assert a is not None and b is not None and c is not None
    calls = logged.indexes[0].calls
    assert node(ns, slot.inode(b.id)) == (slot, b)  # kept, and now the most recent
    assert calls["node"] == 0
    assert node(ns, slot.inode(a.id)) == (slot, a)  # asked again, and c is forgotten
    assert calls["node"] == 1
    assert node(ns, slot.inode(c.id)) == (slot, c)
    assert calls["node"] == 2
