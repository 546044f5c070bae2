"""Registry collections: linking versions into ``wandb-registry-*/<collection>``, on the embedded and the shared
registry, through the CLI, the API and a real mount; and the upgrade of a registry the schema v3 code made."""

from __future__ import annotations

import multiprocessing
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.errors import InvalidInput, NotFound
from refmount.registry import Registry, open_registry
from refmount.registry.copy import copy_registry
from refmount.registry.sql import SCHEMA_VERSION
from refmount.stores.file import file_uri
from tests import test_cli, test_registry
from tests.conftest import Cli
from tests.test_cli import snapshot
from tests.test_mount import log, make_tree
from tests.test_registry import _execute, manifest
from tests.test_retention import PAST, _until, upgraded

# The fixtures of those modules, here too: every registry test runs on SQLite and on PostgreSQL.
any_registry_url, registry, data = test_registry.any_registry_url, test_registry.registry, test_cli.data

COLLECTION = ("wandb-registry-datasets", "mnist")


def state(reg: Registry) -> list[Any]:
    """Everything the registry shows of every project, to show that a refused call changed nothing."""
    return [(p, a.name, a.type, [v.to_json() for v in reg.versions(p, a.name)], reg.aliases(p, a.name))
            for p in reg.projects() for a in reg.artifacts(p)]  # fmt: skip


# -- the registry ------------------------------------------------------------------------------------


def test_link_gives_the_collection_its_own_versions_sharing_the_manifest(registry: Registry) -> None:
    for digests in (["a"], ["a", "b"], ["c"]):
        registry.log_version("vision", "mnist", manifest(*digests), type="dataset", description=f"{digests}",
                             metadata={"n": len(digests)})  # fmt: skip
    first = registry.link_version("vision", "mnist", "v1", *COLLECTION, aliases=["production"])
    assert first.created
    linked, source = first.version, registry.resolve("vision", "mnist", "v1")
    assert (linked.qualified_name, linked.linked_from, linked.aliases) == (
        "wandb-registry-datasets/mnist:v0", "vision/mnist:v1", ("latest", "production"))  # fmt: skip
    assert (linked.manifest_id, linked.digest, linked.type, linked.description, dict(linked.metadata)) == (
        source.manifest_id, source.digest, "dataset", "['a', 'b']", {"n": 2})  # fmt: skip
    assert _execute(registry.url, "SELECT COUNT(*) FROM manifests") == 3  # shared, not copied
    assert registry.link_version("vision", "mnist", "latest", *COLLECTION).version.label == "v1"
    # The content of a live collection version again: no new version, only the alias moves.
    again = registry.link_version("vision", "mnist", "v1", *COLLECTION, aliases=["best"])
    assert not again.created and again.version.label == "v0" and again.version.aliases == ("best", "production")
    assert registry.aliases(*COLLECTION) == {"best": 0, "latest": 1, "production": 0}
    # A link of a link records the version it came from; into the same collection it is the same version.
    other = registry.link_version(*COLLECTION, "production", "wandb-registry-datasets", "mnist-eval")
    assert other.version.linked_from == "vision/mnist:v1"
    assert not registry.link_version(*COLLECTION, "v1", *COLLECTION).created
    assert registry.links_to("vision", "mnist") == {
        1: ("wandb-registry-datasets/mnist:v0", "wandb-registry-datasets/mnist-eval:v0"),
        2: ("wandb-registry-datasets/mnist:v1",),
    }
    assert registry.projects() == ["vision", "wandb-registry-datasets"]
    assert [a.name for a in registry.artifacts("wandb-registry-datasets")] == ["mnist", "mnist-eval"]
    assert [e.path for e in registry.iter_entries(linked.manifest_id)] == ["f0.bin", "f1.bin"]


def test_bad_links_are_refused_and_change_nothing(registry: Registry) -> None:
    registry.log_version("vision", "mnist", manifest("a"), type="dataset")
    registry.log_version("vision", "mnist", manifest("b"), type="dataset", aliases=["gone"])
    registry.log_version("vision", "model", manifest("w"), type="model")
    registry.link_version("vision", "mnist", "v0", *COLLECTION)
    registry.set_ttl("vision", "mnist", 1, PAST)
    registry.log_version("vision", "mnist", manifest("c"), type="dataset")
    registry.delete_version("vision", "mnist", 2)
    before = state(registry)
    refused: list[tuple[tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
        (("vision", "mnist", "v9", *COLLECTION), {}, NotFound, "vision/mnist has no version v9"),
        (("vision", "nope", "v0", *COLLECTION), {}, NotFound, "no artifact vision/nope"),
        (("vision", "mnist", "v1", *COLLECTION), {}, NotFound, "vision/mnist:v1 expired"),
        (("vision", "mnist", "v2", *COLLECTION), {}, NotFound, "vision/mnist:v2 was deleted"),
        (("vision", "mnist", "gone", *COLLECTION), {}, NotFound, "points at v1, which expired"),
        (("vision", "mnist", "v0", "vision", "mnist2"), {}, InvalidInput, "a link target is a registry collection"),
        (("vision", "mnist", "v0", "wandb-registry-", "x"), {}, InvalidInput, "a link target is a registry"),
        (("vision", "mnist", "v0", "wandb-registry-x", "a/b"), {}, InvalidInput, "invalid collection name"),
        (("vision", "mnist", "v0", "wandb-registry-x", ".m"), {}, InvalidInput, "invalid collection name"),
        (("vision", "mnist", "v0", "wandb registry", "m"), {}, InvalidInput, "invalid project name"),
        (("vision", "model", "v0", *COLLECTION), {}, InvalidInput,
         "wandb-registry-datasets/mnist has type 'dataset', not 'model'"),
        (("vision", "mnist", "v0", *COLLECTION), {"aliases": ["latest"]}, InvalidInput, "reserved"),
        (("vision", "mnist", "v0", "wandb-registry-new", "m"), {"aliases": ["ok", "v3"]}, InvalidInput, "reserved"),
    ]  # fmt: skip
    for args, kwargs, error, message in refused:
        with pytest.raises(error, match=message):
            registry.link_version(*args, **kwargs)
        assert state(registry) == before, args
    for label, error, message in (("v0", NotFound, "no artifact vision/nope"),):
        with pytest.raises(error, match=message):
            registry.unlink_version("vision", "nope", label)
    with pytest.raises(InvalidInput, match=r"vision/mnist:v0 is not a link \(it was logged\)"):
        registry.unlink_version("vision", "mnist", "v0")
    with pytest.raises(NotFound, match="has no alias 'best'"):
        registry.unlink_version(*COLLECTION, "best")
    with pytest.raises(InvalidInput, match="wandb-registry-datasets is a registry"):
        registry.log_version("wandb-registry-datasets", "mnist", manifest("z"), type="dataset")
    assert state(registry) == before


def test_unlink_alias_delete_ttl_and_gc_on_a_collection(registry: Registry, any_registry_url: str) -> None:
    registry.log_version("vision", "mnist", manifest("a"), type="dataset")
    registry.log_version("vision", "mnist", manifest("b"), type="dataset")
    registry.link_version("vision", "mnist", "v0", *COLLECTION, aliases=["production"])
    registry.link_version("vision", "mnist", "v1", *COLLECTION)
    shared = registry.resolve(*COLLECTION, "production").manifest_id
    registry.set_alias(*COLLECTION, "staging", 1)
    assert registry.aliases(*COLLECTION) == {"latest": 1, "production": 0, "staging": 1}
    # Deleting the source leaves the link readable: it uses the same stored manifest, so gc keeps it.
    registry.delete_version("vision", "mnist", 0)
    collected = registry.collect()
    assert collected.versions == (("vision/mnist:v0", "deleted"),) and collected.manifests == ()
    assert shared in registry.live_manifest_ids()
    assert [e.digest for e in registry.iter_entries(registry.resolve(*COLLECTION, "production").manifest_id)] == ["a"]
    # Unlink takes its aliases with it; the manifest goes at the next gc, as no version uses it now.
    deletion = registry.unlink_version(*COLLECTION, "production")
    assert (deletion.version, deletion.dropped_aliases, deletion.was_latest) == (
        "wandb-registry-datasets/mnist:v0", ("production",), False)  # fmt: skip
    with pytest.raises(NotFound, match="was deleted"):
        registry.unlink_version(*COLLECTION, "v0")
    assert registry.collect().manifests == ((shared, 1),)
    # delete and TTL work on a collection version as on any: a link of a deleted one is a new version.
    with pytest.raises(InvalidInput, match="protected by alias staging"):
        registry.delete_version(*COLLECTION, 1)
    registry.set_ttl(*COLLECTION, 1, PAST)
    assert registry.artifacts("wandb-registry-datasets") == [] and registry.projects() == ["vision"]
    relinked = registry.link_version("vision", "mnist", "v1", *COLLECTION)
    assert relinked.created and relinked.version.label == "v2" and relinked.version.expires_at is None
    assert registry.links_to("vision", "mnist") == {1: ("wandb-registry-datasets/mnist:v2",)}
    registry.collect()
    assert [v.label for v in registry.versions(*COLLECTION)] == ["v2"]
    assert _execute(any_registry_url, "SELECT COUNT(*) FROM manifests") == 1


def test_registry_copy_keeps_collections_and_their_sources(registry: Registry, tmp_path: Path) -> None:
    source = open_registry(f"sqlite:///{tmp_path / 'laptop.db'}", create=True)
    source.log_version("vision", "mnist", manifest("a"), type="dataset")
    source.log_version("vision", "mnist", manifest("b"), type="dataset")
    source.link_version("vision", "mnist", "v1", *COLLECTION, aliases=["production"])
    report = copy_registry(source, registry)
    assert (report.copied, report.present) == (3, 0)
    copied = registry.resolve(*COLLECTION, "production")
    assert (copied.label, copied.linked_from, copied.manifest_id) == (
        "v0", "vision/mnist:v1", registry.resolve("vision", "mnist", "v1").manifest_id)  # fmt: skip
    assert registry.links_to("vision", "mnist") == {1: ("wandb-registry-datasets/mnist:v0",)}
    assert registry.link_version("vision", "mnist", "v0", *COLLECTION).version.label == "v1"
    source.close()


def _link_in_a_process(url: str, sources: list[str], out: Any) -> None:
    reg = open_registry(url)
    out.put([(s, reg.link_version("p", "a", s, *COLLECTION).version.label) for s in sources])
    reg.close()


def test_concurrent_links_never_lose_or_duplicate_a_version(any_registry_url: str) -> None:
    """Three processes link the same versions, in other orders, into one new collection at once: each
    version gets one collection version, numbered without a gap, and every process is told the same one."""
    reg = open_registry(any_registry_url, create=True)
    for digest in ("a", "b", "c", "d"):
        reg.log_version("p", "a", manifest(digest), type="dataset")
    reg.close()
    orders = [["v0", "v1", "v2", "v3"], ["v3", "v2", "v1", "v0"], ["v1", "v3", "v0", "v2"]]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    runs = [ctx.Process(target=_link_in_a_process, args=(any_registry_url, order, out)) for order in orders]
    for p in runs:
        p.start()
    results = [dict(out.get(timeout=120)) for _ in runs]
    for p in runs:
        p.join(30)
        assert p.exitcode == 0
    assert results[0] == results[1] == results[2] and sorted(results[0].values()) == ["v0", "v1", "v2", "v3"]
    reg = open_registry(any_registry_url)
    linked = {v.linked_from: v.label for v in reg.versions(*COLLECTION)}
    assert linked == {f"p/a:{source}": label for source, label in results[0].items()}
    reg.close()


# -- upgrade from schema v3 --------------------------------------------------------------------------

V3_COMMIT = "133d8a2"  # refmount's main at schema v3 (retention), the last before collections
V3_SCRIPT = textwrap.dedent("""
    import sys
    from refmount.manifest import Entry, Manifest
    from refmount.registry import open_registry
    from refmount.registry.sql import SCHEMA_VERSION
    assert SCHEMA_VERSION == 3, SCHEMA_VERSION
    reg = open_registry(sys.argv[1], create=True)
    for i, digests in enumerate((["a"], ["a", "b"], ["c"], ["d"])):
        m = Manifest(Entry(f"d{j}/f{j}.bin", f"s3://b/f{j}.bin", d, 10 + j, {"etag": d})
                     for j, d in enumerate(digests))
        reg.log_version("vision", "mnist", m, type="dataset", description=f"n{i}", metadata={"i": i},
                        ttl=86400.0 if i == 1 else None)
    reg.set_alias("vision", "mnist", "best", 1)
    reg.delete_version("vision", "mnist", 3)
    reg.close()
""")


def test_a_schema_v3_registry_made_by_the_previous_code_upgrades_without_losing_data(
    any_registry_url: str, tmp_path: Path
) -> None:
    reg = upgraded(V3_COMMIT, V3_SCRIPT, 3, any_registry_url, tmp_path)
    assert SCHEMA_VERSION >= 4
    versions = reg.versions("vision", "mnist")
    assert [(v.index, v.description, dict(v.metadata), v.aliases, v.expires_at is not None, v.linked_from)
            for v in versions] == [
        (0, "n0", {"i": 0}, (), False, None),
        (1, "n1", {"i": 1}, ("best",), True, None),
        (2, "n2", {"i": 2}, ("latest",), False, None),
    ]  # fmt: skip
    assert versions[1].expires_at == pytest.approx(versions[1].created_at + 86400)
    entries = list(reg.iter_entries(versions[1].manifest_id))
    assert [(e.path, e.ref, e.digest, e.size) for e in entries] == [
        ("d0/f0.bin", "s3://b/f0.bin", "a", 10),
        ("d1/f1.bin", "s3://b/f1.bin", "b", 11),
    ]
    with pytest.raises(NotFound, match="vision/mnist:v3 was deleted"):
        reg.resolve("vision", "mnist", "v3")
    # The upgraded rows link, and the collection version keeps its manifest through the source's gc.
    linked = reg.link_version("vision", "mnist", "best", *COLLECTION).version
    assert (linked.label, linked.linked_from, linked.manifest_id) == ("v0", "vision/mnist:v1", versions[1].manifest_id)
    reg.delete_version("vision", "mnist", 1, force=True)
    assert reg.collect().versions == (("vision/mnist:v1", "deleted"), ("vision/mnist:v3", "deleted"))
    assert [e.path for e in reg.iter_entries(reg.resolve(*COLLECTION, "latest").manifest_id)] == [
        "d0/f0.bin", "d1/f1.bin"]  # fmt: skip
    assert reg.log_version("vision", "mnist", manifest("new"), type="dataset").version.index == 4
    reg.close()


# -- the command line --------------------------------------------------------------------------------


def test_cli_link_show_ls_download_diff_cache_unlink(
    cli: Cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    uri = file_uri(data)
    cli("log", "vision/mnist", uri)
    (data / "extra.csv").write_text("9\n")  # a new file: v0's files stay as logged, and readable
    cli("log", "vision/mnist", uri)
    assert cli("link", "vision/mnist:v0", "wandb-registry-datasets/mnist", "--alias", "production").out == (
        "linked vision/mnist:v0 as wandb-registry-datasets/mnist:v0\n"
        "wandb-registry-datasets/mnist:production -> v0\n")  # fmt: skip
    assert cli("link", "vision/mnist", "wandb-registry-datasets/mnist").out == (
        "linked vision/mnist:v1 as wandb-registry-datasets/mnist:v1\n")  # fmt: skip
    assert cli("link", "vision/mnist:v1", "wandb-registry-datasets/mnist", "--alias", "staging").out == (
        "unchanged: wandb-registry-datasets/mnist:v1 links vision/mnist:v1 already\n"
        "wandb-registry-datasets/mnist:staging -> v1\n")  # fmt: skip
    shown = cli("show", "wandb-registry-datasets/mnist:production").out.splitlines()
    assert shown[0].startswith("wandb-registry-datasets/mnist:v0  type=dataset") and "aliases=production" in shown[0]
    assert shown[1] == "linked from vision/mnist:v0" and any("labels.csv" in line for line in shown)
    assert cli("ls", "--json").json() == [{"project": "vision"}, {"project": "wandb-registry-datasets"}]
    rows = [line.split("\t") for line in cli("ls", "wandb-registry-datasets/mnist").out.splitlines()]
    assert rows[0][-1] == "linked_from" and [(r[0], r[-1]) for r in rows[1:]] == [
        ("v0", "vision/mnist:v0"), ("v1", "vision/mnist:v1")]  # fmt: skip
    rows = [line.split("\t") for line in cli("ls", "vision/mnist").out.splitlines()]
    assert rows[0][-1] == "linked_to" and [(r[0], r[-1]) for r in rows[1:]] == [
        ("v0", "wandb-registry-datasets/mnist:v0"), ("v1", "wandb-registry-datasets/mnist:v1")]  # fmt: skip
    listed = cli("ls", "vision/mnist", "--json").json()
    assert [(v["linked_from"], v["linked_to"]) for v in listed] == [
        (None, ["wandb-registry-datasets/mnist:v0"]), (None, ["wandb-registry-datasets/mnist:v1"])]  # fmt: skip
    # The table of an artifact without links keeps its columns.
    cli("log", "vision/other", uri)
    assert cli("ls", "vision/other").out.splitlines()[0].split("\t")[-1] == "ttl_left"

    cli("download", "wandb-registry-datasets/mnist:production", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out" / "labels.csv").read_text() == "0,1,2\n"
    assert "extra.csv" in cli("diff", "wandb-registry-datasets/mnist:v0", "wandb-registry-datasets/mnist:v1").out
    cli("cache", "prefetch", "wandb-registry-datasets/mnist:staging", "-q")
    status = cli("cache", "status", "wandb-registry-datasets/mnist", "--json").json()
    # download filled the cache with v0's blocks, prefetch with those v1 adds.
    assert [(v["version"], v["cached_bytes"] == v["cacheable_bytes"] > 0) for v in status["versions"]] == [
        ("v0", True), ("v1", True)]  # fmt: skip

    # Deleting the source leaves the link whole; unlink takes the link's aliases with it.
    cli("delete", "vision/mnist:v0")
    cli("gc")
    cli("download", "wandb-registry-datasets/mnist:production", str(tmp_path / "again"), "-q")
    assert (tmp_path / "again" / "labels.csv").read_text() == "0,1,2\n"
    assert cli("unlink", "wandb-registry-datasets/mnist:staging").out == (
        "unlinked wandb-registry-datasets/mnist:v1; removed alias staging\n"
        "wandb-registry-datasets/mnist:latest now points at v0\n")  # fmt: skip
    assert [v["version"] for v in cli("ls", "wandb-registry-datasets/mnist", "--json").json()] == ["v0"]
    assert "linked_to" not in cli("ls", "vision/mnist").out.splitlines()[0]


def test_cli_bad_links_are_one_line_nonzero_and_change_nothing(cli: Cli, data: Path) -> None:
    cli("log", "vision/mnist", file_uri(data))
    (data / "labels.csv").write_text("9\n")
    cli("log", "vision/model", file_uri(data), "--type", "model")
    cli("link", "vision/mnist:v0", "wandb-registry-datasets/mnist")
    cli("delete", "vision/model:v0")
    (data / "labels.csv").write_text("8\n")
    cli("log", "vision/model", file_uri(data), "--type", "model")
    before = snapshot(cli)
    for args, message in [
        (("link", "vision/mnist:v7", "wandb-registry-datasets/mnist"), "vision/mnist has no version v7"),
        (("link", "vision/model:v0", "wandb-registry-models/m"), "vision/model:v0 was deleted"),
        (("link", "vision/model", "wandb-registry-datasets/mnist"),
         "wandb-registry-datasets/mnist has type 'dataset', not 'model'"),
        (("link", "vision/mnist", "vision/copy"), "a link target is a registry collection"),
        (("link", "vision/mnist", "wandb-registry-datasets/mnist:v0"), "without a version"),
        (("link", "vision/mnist", "wandb-registry-datasets"), "a link target is a collection"),
        (("link", "vision/mnist", "wandb-registry-datasets/../x"), "invalid collection name"),
        (("link", "vision/mnist", "wandb-registry-datasets/m", "--alias", "latest"), "reserved"),
        (("link", "vision/mnist:", "wandb-registry-datasets/m"), "empty version or alias"),
        (("unlink", "vision/mnist:v0"), "vision/mnist:v0 is not a link"),
        (("unlink", "wandb-registry-datasets/mnist"), "expected PROJECT/ARTIFACT:VERSION"),
        (("unlink", "wandb-registry-datasets/mnist:v5"), "has no version v5"),
        (("unlink", "wandb-registry-datasets/nope:v0"), "no artifact wandb-registry-datasets/nope"),
        (("log", "wandb-registry-datasets/mnist", file_uri(data)), "wandb-registry-datasets is a registry"),
    ]:  # fmt: skip
        result = cli(*args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, (args, result.err)
    assert snapshot(cli) == before


def test_cli_help_explains_link_and_unlink(cli: Cli) -> None:
    link = " ".join(cli("link", "--help").out.split())
    assert (
        "--alias TEXT" in link
        and "repeatable" in link
        and "COLLECTION: wandb-registry-" in link
        and "REGISTRY/NAME" in link
    )
    assert "is not linked again" in link and "one type" in link
    assert "not a link" in " ".join(cli("unlink", "--help").out.split())
    for command in ("link", "unlink"):
        assert f"  {command} " in cli("--help").out


def test_cli_link_on_a_shared_registry(postgres_url: str, data: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    cli = Cli(postgres_url)
    cli("log", "vision/mnist", file_uri(data))
    cli("link", "vision/mnist", "wandb-registry-datasets/mnist", "--alias", "production")
    cli("log", "vision/model", file_uri(data), "--type", "model")
    before = snapshot(cli)
    for args, message in [
        (("unlink", "vision/mnist:latest"), "vision/mnist:v0 is not a link"),
        (("link", "vision/model", "wandb-registry-datasets/mnist"), "has type 'dataset', not 'model'"),
        (("link", "vision/mnist:v3", "wandb-registry-datasets/mnist"), "vision/mnist has no version v3"),
    ]:
        result = cli(*args, ok=False)
        assert message in result.err and len(result.err.strip().splitlines()) == 1, (args, result.err)
    assert snapshot(cli) == before
    cli("delete", "vision/mnist:v0")
    cli("gc")
    cli("download", "wandb-registry-datasets/mnist:production", str(tmp_path / "out"), "-q")
    assert (tmp_path / "out" / "labels.csv").read_text() == "0,1,2\n"
    assert cli("unlink", "wandb-registry-datasets/mnist:production").out.startswith(
        "unlinked wandb-registry-datasets/mnist:v0; removed alias production"
    )
    assert cli("ls", "--json").json() == [{"project": "vision"}]


# -- the API and the mount ---------------------------------------------------------------------------


def test_api_link_and_unlink(tmp_path: Path, registry_url: str) -> None:
    make_tree(tmp_path / "src", 0)
    log(registry_url, "p/ds", file_uri(tmp_path / "src"))
    name = refmount.link_artifact("p/ds", "wandb-registry-datasets/ds", aliases=["production"], registry=registry_url)
    assert name == "wandb-registry-datasets/ds:v0"
    version = refmount.use_artifact("wandb-registry-datasets/ds:production", registry=registry_url)
    assert version.linked_from == "p/ds:v0" and version.to_json()["linked_from"] == "p/ds:v0"
    with pytest.raises(InvalidInput, match="a link target is a collection, wandb-registry-REGISTRY/COLLECTION"):
        refmount.link_artifact("p/ds", "wandb-registry-datasets", registry=registry_url)
    assert refmount.unlink_artifact("wandb-registry-datasets/ds:production", registry=registry_url) == name
    with pytest.raises(NotFound, match="has no alias 'production'"):
        refmount.use_artifact("wandb-registry-datasets/ds:production", registry=registry_url)


def test_link_unlink_and_alias_through_the_mount(tmp_path: Path, registry_url: str, mount_factory: Any) -> None:
    trees = [make_tree(tmp_path / f"src{n}", n) for n in range(2)]
    for n in range(2):
        log(registry_url, "p/ds", file_uri(tmp_path / f"src{n}"))
    m = mount_factory(alias_ttl=0.5)
    collection = m.path / "wandb-registry-datasets" / "ds"
    reg = open_registry(registry_url)
    reg.link_version("p", "ds", "v0", "wandb-registry-datasets", "ds", aliases=["production"])
    _until(lambda: (collection / "production").exists(), "the linked version did not show on the mount")
    assert sorted(os.listdir(collection)) == ["latest", "production", "v0"]
    assert os.readlink(collection / "production") == "v0"
    assert (collection / "production/labels.csv").read_bytes() == trees[0]["labels.csv"]
    assert (collection / "v0/big.bin").read_bytes() == trees[0]["big.bin"]

    reg.link_version("p", "ds", "v1", "wandb-registry-datasets", "ds")
    reg.set_alias("wandb-registry-datasets", "ds", "production", 1)
    _until(lambda: os.readlink(collection / "production") == "v1", "production did not move on the mount")
    assert (collection / "production/big.bin").read_bytes() == trees[1]["big.bin"]
    assert os.readlink(collection / "latest") == "v1"

    held = open(collection / "v1/labels.csv", "rb")  # noqa: SIM115 - held open across the unlink
    reg.unlink_version("wandb-registry-datasets", "ds", "v1")
    _until(lambda: not (collection / "v1").exists(), "the unlinked version stayed on the mount")
    assert sorted(os.listdir(collection)) == ["latest", "v0"] and os.readlink(collection / "latest") == "v0"
    assert held.read() == trees[1]["labels.csv"]  # opened before the unlink: still served
    held.close()
    assert (m.path / "p/ds/v1/labels.csv").read_bytes() == trees[1]["labels.csv"]  # the source is untouched
    reg.close()
