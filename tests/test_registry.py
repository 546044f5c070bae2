"""Registry semantics, written against the Registry interface so every backend runs them."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refmount.errors import InvalidInput, NotFound
from refmount.manifest import Entry, Manifest
from refmount.registry import NoRegistry, Registry, open_registry
from refmount.registry.postgres import PostgresRegistry
from refmount.registry.sql import REGISTRY_TABLES, SCHEMA_VERSION
from refmount.uri import parse_ref


@pytest.fixture(params=["sqlite", "postgres"])
def any_registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every registry test runs on the embedded and on the shared backend."""
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def registry(any_registry_url: str, tmp_path: Path) -> Iterator[Registry]:
    reg = open_registry(any_registry_url, create=True)
    if isinstance(reg, PostgresRegistry):
        reg.index_dir = tmp_path / "index"
    yield reg
    reg.close()


def manifest(*digests: str, prefix: str = "f") -> Manifest:
    return Manifest(
        Entry(f"{prefix}{i}.bin", f"s3://b/{prefix}{i}.bin", d, 10, {"etag": d}) for i, d in enumerate(digests)
    )


def test_log_unchanged_changed(registry: Registry) -> None:
    first = registry.log_version("vision", "mnist", manifest("a", "b"), type="dataset", metadata={"k": 1})
    assert first.created and first.version.index == 0 and first.version.aliases == ("latest",)
    again = registry.log_version("vision", "mnist", manifest("a", "b"), type="dataset", aliases=["best"])
    assert not again.created and again.version.index == 0 and set(again.version.aliases) == {"best", "latest"}
    changed = registry.log_version("vision", "mnist", manifest("a", "c"), type="dataset")
    assert changed.created and changed.version.index == 1
    added = registry.log_version("vision", "mnist", manifest("a", "c", "d"), type="dataset")
    removed = registry.log_version("vision", "mnist", manifest("a"), type="dataset")
    assert (added.version.index, removed.version.index) == (2, 3)
    assert registry.aliases("vision", "mnist") == {"best": 0, "latest": 3}
    v0 = registry.resolve("vision", "mnist", "v0")
    assert v0.metadata == {"k": 1} and v0.file_count == 2 and v0.total_size == 20
    assert registry.resolve("vision", "mnist", "best").index == 0
    assert [v.index for v in registry.versions("vision", "mnist")] == [0, 1, 2, 3]


def test_schemes_are_those_the_entries_reference(registry: Registry) -> None:
    assert registry.schemes() == set()
    registry.log_version("p", "a", manifest("a", "b"), type="dataset")
    mixed = Manifest([Entry("x", "file:///d/x", "m", 1, {}), Entry("y", "HTTPS://h/y", "e", 1, {"etag": "e"})])
    registry.log_version("p", "b", mixed, type="dataset")
    assert registry.schemes() == {"s3", "file", "https"}


def test_going_back_to_old_content_is_a_new_version(registry: Registry) -> None:
    for digests in (["a"], ["b"], ["a"]):
        registry.log_version("p", "a", manifest(*digests), type="dataset")
    versions = registry.versions("p", "a")
    assert [v.index for v in versions] == [0, 1, 2]
    assert versions[0].manifest_id == versions[2].manifest_id  # stored once


def test_aliases(registry: Registry) -> None:
    registry.log_version("p", "a", manifest("a"), type="dataset")
    registry.log_version("p", "a", manifest("b"), type="dataset")
    registry.set_alias("p", "a", "best", 0)
    registry.set_alias("p", "a", "best", 1)
    assert registry.resolve("p", "a", "best").index == 1
    registry.delete_alias("p", "a", "best")
    with pytest.raises(NotFound):
        registry.resolve("p", "a", "best")
    with pytest.raises(NotFound):
        registry.delete_alias("p", "a", "best")
    with pytest.raises(NotFound):
        registry.set_alias("p", "a", "best", 7)


def test_lookups_of_missing_things(registry: Registry) -> None:
    registry.log_version("p", "a", manifest("a"), type="dataset")
    for call in (lambda: registry.artifacts("nope"), lambda: registry.versions("p", "nope"),
                 lambda: registry.resolve("p", "a", "v9"), lambda: registry.resolve("p", "a", "nope"),
                 lambda: registry.manifest_index("0" * 64)):  # fmt: skip
        with pytest.raises(NotFound):
            call()


def test_type_mismatch_is_refused(registry: Registry) -> None:
    registry.log_version("p", "a", manifest("a"), type="dataset")
    with pytest.raises(InvalidInput, match="has type 'dataset'"):
        registry.log_version("p", "a", manifest("b"), type="model")
    assert len(registry.versions("p", "a")) == 1


def test_listing(registry: Registry) -> None:
    registry.log_version("vision", "mnist", manifest("a"), type="dataset")
    registry.log_version("vision", "cifar", manifest("b"), type="dataset")
    registry.log_version("nlp", "wiki", manifest("c"), type="dataset")
    assert registry.projects() == ["nlp", "vision"]
    arts = registry.artifacts("vision")
    assert [(a.name, a.version_count, a.latest_index) for a in arts] == [("cifar", 1, 0), ("mnist", 1, 0)]


def test_manifest_index_walks_directories_without_loading_all(registry: Registry) -> None:
    entries = [Entry(f"d{d}/sub/f{i}", f"s3://b/{d}/{i}", f"e{d}.{i}", i) for d in range(3) for i in range(25)]
    entries.append(Entry("top.txt", "s3://b/top", "t", 1))
    version = registry.log_version("p", "big", Manifest(entries), type="dataset").version
    index = registry.manifest_index(version.manifest_id)
    top = index.children(index.root_id)
    assert sorted(n.name for n in top) == ["d0", "d1", "d2", "top.txt"]
    sub = index.child(index.child(index.root_id, "d1").id, "sub")
    assert sub is not None and sub.is_dir
    page1 = index.children(sub.id, limit=10)
    page2 = index.children(sub.id, after_id=page1[-1].id, limit=100)
    assert len(page1) == 10 and len(page2) == 15
    assert {n.name for n in page1 + page2} == {f"f{i}" for i in range(25)}
    node = index.node(page2[0].id)
    assert node is not None and node.entry is not None and node.entry.path.startswith("d1/sub/")
    assert index.entry("top.txt") == Entry("top.txt", "s3://b/top", "t", 1)
    assert index.entry("d1") is None and index.child(index.root_id, "nope") is None
    assert [e.path for e in registry.iter_entries(version.manifest_id)] == sorted(e.path for e in entries)


def _log_some(url: str, worker: int, count: int, start_at: float) -> list[int]:
    reg = open_registry(url)
    time.sleep(max(0.0, start_at - time.time()))  # all workers hit the registry together
    try:
        return [reg.log_version("p", "race", manifest(f"w{worker}.{n}"), type="dataset").version.index
                for n in range(count)]  # fmt: skip
    finally:
        reg.close()


@pytest.mark.parametrize("workers, each", [(8, 1), (16, 5)])
def test_concurrent_loggers_get_distinct_contiguous_versions(any_registry_url: str, workers: int, each: int) -> None:
    open_registry(any_registry_url, create=True).close()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        start_at = time.time() + 3
        results = pool.starmap(_log_some, [(any_registry_url, w, each, start_at) for w in range(workers)])
    total = workers * each
    assert sorted(i for indices in results for i in indices) == list(range(total))
    reg = open_registry(any_registry_url)
    versions = reg.versions("p", "race")
    assert [v.index for v in versions] == list(range(total))
    assert len({v.digest for v in versions}) == total
    assert reg.aliases("p", "race") == {"latest": total - 1}  # the last committed
    reg.close()


def _tables(url: str) -> list[str]:
    """The tables at a registry URL; [] when there is not even a database file."""
    if url.startswith("sqlite://"):
        import sqlite3

        path = Path(url.removeprefix("sqlite://"))
        if not path.exists():
            return []
        db = sqlite3.connect(path)
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    else:
        import psycopg

        db = psycopg.connect(url)
        rows = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    db.close()
    return sorted(name for (name,) in rows)


def _execute(url: str, sql: str) -> Any:
    """Run one statement on the registry's database, behind refmount's back; its first row's first value."""
    import sqlite3

    import psycopg

    db = sqlite3.connect(url.removeprefix("sqlite://")) if url.startswith("sqlite://") else psycopg.connect(url)
    try:
        cursor = db.execute(sql)
        row = cursor.fetchone() if cursor.description else None
        db.commit()
    finally:
        db.close()
    return row[0] if row else None


def test_only_writers_create_a_registry(any_registry_url: str, tmp_path: Path) -> None:
    for _ in range(2):
        with pytest.raises(
            NoRegistry, match=r"^no registry at .* \(log a version first, or run `refmount registry init`\)$"
        ):
            open_registry(any_registry_url)
        assert _tables(any_registry_url) == []
    open_registry(any_registry_url, create=True).close()
    assert "schema_version" in _tables(any_registry_url)
    reg = open_registry(any_registry_url)
    assert reg.projects() == []
    reg.close()


def test_a_newer_schema_is_refused(any_registry_url: str) -> None:
    open_registry(any_registry_url, create=True).close()
    _execute(any_registry_url, f"UPDATE schema_version SET version = {SCHEMA_VERSION + 1}")
    for create in (False, True):
        with pytest.raises(
            InvalidInput, match=f"has schema v{SCHEMA_VERSION + 1}; this refmount knows v{SCHEMA_VERSION}"
        ):
            open_registry(any_registry_url, create=create)


def test_schema_v1_refs_keep_their_meaning_after_the_upgrade(any_registry_url: str, tmp_path: Path) -> None:
    """v1 percent-encoded object keys in refs; v2 writes them as W&B does. The upgrade marks v1's encoded
    refs so that each still names the object it named, and leaves every other ref alone."""
    v1_refs = {
        "encoded.txt": "s3://b/odd/%C3%BCn%2541.txt",  # key 'odd/ün%41.txt'
        "plain.txt": "s3://b/odd/plain.txt",
        "gs.txt": "gs://b/x%20y.txt",
        "file.txt": "file:///data/x%25y.txt",  # file:// refs are decoded in both schemas
        "web.txt": "https://example.com/a%20b.txt",  # http(s) refs are URLs, as given
    }
    entries = [Entry(path, ref, f"d{i}", 1, {"etag": f"d{i}"}) for i, (path, ref) in enumerate(v1_refs.items())]
    reg = open_registry(any_registry_url, create=True)
    version = reg.log_version("p", "a", Manifest(entries), type="dataset").version
    reg.close()
    _execute(any_registry_url, "UPDATE schema_version SET version = 1")
    reg = open_registry(any_registry_url)
    if isinstance(reg, PostgresRegistry):
        reg.index_dir = tmp_path / "index"
    upgraded = {e.path: e for e in reg.manifest(version.manifest_id)}
    assert {path for path, e in upgraded.items() if e.ref_quoted} == {"encoded.txt", "gs.txt"}
    assert parse_ref(upgraded["encoded.txt"].ref, quoted=True).path == "odd/ün%41.txt"
    assert upgraded["plain.txt"].extra == {"etag": "d1"}
    reg.close()
    assert _execute(any_registry_url, "SELECT MAX(version) FROM schema_version") == SCHEMA_VERSION


def test_a_database_with_some_other_projects_table_is_left_untouched(any_registry_url: str) -> None:
    assert "projects" in REGISTRY_TABLES
    _execute(any_registry_url, "CREATE TABLE projects (id BIGINT PRIMARY KEY, name TEXT)")  # someone else's
    _execute(any_registry_url, "CREATE TABLE customers (id INTEGER)")
    for create in (False, True):
        with pytest.raises(InvalidInput, match="is not a refmount registry"):
            open_registry(any_registry_url, create=create)
        assert _tables(any_registry_url) == ["customers", "projects"]


def test_an_alias_is_deleted_only_where_the_caller_saw_it(registry: Registry) -> None:
    for digest in ("a", "b"):
        registry.log_version("p", "a", manifest(digest), type="dataset")
    registry.set_alias("p", "a", "best", 0)
    registry.set_alias("p", "a", "best", 1)  # moved by someone else meanwhile
    with pytest.raises(InvalidInput, match="best points at v1, not v0: nothing removed"):
        registry.delete_alias("p", "a", "best", only_at=0)
    assert registry.aliases("p", "a")["best"] == 1
    registry.delete_alias("p", "a", "best", only_at=1)
    assert "best" not in registry.aliases("p", "a")
