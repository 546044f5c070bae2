"""The namespace's memory of recently looked-up nodes, as a unit over a real SQLite registry."""

from __future__ import annotations

import collections
import functools
from pathlib import Path
from typing import Any

import pytest
import trio

import refmount
from refmount.fs import namespace
from refmount.fs.namespace import Namespace
from refmount.fs.nodes import FsNode, Root, VersionNode
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

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

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


def version_root(ns: Namespace) -> VersionNode:
    async def resolve() -> VersionNode:
        artifact = await ns.child(await ns.child(Root(), "proj"), "files")  # type: ignore[arg-type]
        found = await ns.child(artifact, "v0")  # type: ignore[arg-type]
        assert isinstance(found, VersionNode)
        return found

    root = trio.run(resolve)
    assert resolve_inode(ns, root.inode) == root
    return root


def resolve_inode(ns: Namespace, inode: int) -> FsNode | None:
    return trio.run(ns.resolve, inode)


def child(ns: Namespace, parent: VersionNode, name: str) -> VersionNode | None:
    found = trio.run(ns.child, parent, name)
    assert found is None or isinstance(found, VersionNode)
    return found


def test_a_version_root_needs_no_index(logged: CountingRegistry) -> None:
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    root = version_root(ns)
    assert root.is_dir and root.node.id == root.slot.root_id
    assert not logged.indexes  # a stat of vN fetches (on PostgreSQL: copies) no manifest


def test_a_looked_up_file_is_read_without_asking_the_index_again(logged: CountingRegistry) -> None:
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    root = version_root(ns)
    found = child(ns, root, "b.txt")
    assert found is not None and found.entry is not None and found.entry.path == "b.txt"
    assert child(ns, root, "missing.txt") is None
    assert resolve_inode(ns, found.inode) == found
    assert len(logged.indexes) == 1 and logged.indexes[0].calls == {"child": 2}


def test_only_the_most_recent_nodes_are_kept(logged: CountingRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(namespace, "RECENT_NODES", 2)
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    root = version_root(ns)
    a, b, c = (child(ns, root, name) for name in ("a.txt", "b.txt", "c.txt"))  # a is forgotten
    assert a is not None and b is not None and c is not None
    calls = logged.indexes[0].calls
    assert resolve_inode(ns, b.inode) == b  # kept, and now the most recent
    assert calls["node"] == 0
    assert resolve_inode(ns, a.inode) == a  # asked again, and c is forgotten
    assert calls["node"] == 1
    assert resolve_inode(ns, c.inode) == c
    assert calls["node"] == 2


def test_a_directory_looked_up_in_often_answers_from_its_listing(logged: CountingRegistry) -> None:
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    root = version_root(ns)
    names = ["a.txt", "b.txt", "missing.txt", "c.txt"] * 3 + ["tab\there"]
    found = [child(ns, root, name) for name in names]
    assert [node.entry.path if node and node.entry else None for node in found] == [
        name if name.endswith(".txt") and name != "missing.txt" else None for name in names]  # fmt: skip
    # Name by name at first; then one listing answers the rest (a name refused never reaches the index).
    assert logged.indexes[0].calls == {"child": namespace.LIST_AFTER - 1, "children": 1}


def test_a_directory_too_large_to_keep_is_looked_up_name_by_name(
    logged: CountingRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(namespace, "DirectoryNames", functools.partial(namespace.DirectoryNames, whole=2))
    ns = Namespace(logged, alias_ttl=60)  # type: ignore[arg-type]
    root = version_root(ns)
    found = [child(ns, root, name) for name in ["a.txt", "b.txt", "missing.txt"] * 4]
    assert [node is not None for node in found] == [True, True, False] * 4
    assert logged.indexes[0].calls == {"child": 12, "children": 1}  # listed once, found too long, never again


def test_kept_directories_are_bounded_by_entries_least_recently_used_first() -> None:
    def nodes(count: int) -> list[Node]:
        return [Node(i, f"n{i}", False) for i in range(count)]

    directories = namespace.DirectoryNames(limit=5, whole=3)
    for directory in (1, 2):
        assert [directories.worth_listing(directory) for _ in range(namespace.LIST_AFTER)][-2:] == [False, True]
        directories.keep(directory, nodes(2))
    assert directories.get(1) is not None  # 1 is now the most recently used
    directories.keep(3, nodes(3))  # 7 entries: 2 goes
    assert directories.get(2) is None and directories.get(1) is not None and directories.get(3) is not None
    assert [directories.worth_listing(2) for _ in range(namespace.LIST_AFTER)][-1]  # 2 may be listed again
    assert directories.keep(4, nodes(4)) is None
    assert not any(directories.worth_listing(4) for _ in range(2 * namespace.LIST_AFTER))  # too large, for good
