"""Retention: TTLs, deletes and gc, on the embedded and the shared registry, through the CLI, the API and
a real mount; and the upgrade of a registry that the previous schema's code made."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import refmount
from refmount.errors import InvalidInput, NotFound
from refmount.manifest import Manifest
from refmount.registry import Registry, open_registry
from refmount.registry.postgres import PostgresRegistry
from refmount.registry.sql import SCHEMA_VERSION
from refmount.retention import format_span, gc, manifests_in_use, parse_ttl
from refmount.stores.file import file_uri
from tests import test_cli, test_registry
from tests.conftest import Cli
from tests.test_cli import snapshot
from tests.test_mount import log, make_tree
from tests.test_registry import _execute, manifest

# The fixtures of those modules, here too: every registry test runs on SQLite and on PostgreSQL.
any_registry_url, registry, data = test_registry.any_registry_url, test_registry.registry, test_cli.data

PAST = 1e-9  # seconds: a TTL that ended as soon as the version was created (expiry = creation + TTL)


def node_count(url: str) -> int:
    return _execute(url, "SELECT COUNT(*) FROM nodes")


# -- TTL strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("45s", 45), ("90m", 5400), ("12h", 43200), ("30d", 2592000), ("2w", 1209600), ("7D", 604800)]
)
def test_ttl_strings(text: str, seconds: int) -> None:
    assert parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30x", "-5d", "0d", "0", "30", "d", "1.5d", "30 d", "", "9999999w", "nonee"])
def test_bad_ttl_strings_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"invalid TTL .*: use a positive whole number and a unit"):
        parse_ttl(text)


def test_no_ttl_and_spans() -> None:
    assert parse_ttl("none") is None and parse_ttl("NONE") is None
    assert [format_span(s) for s in (0, 45, 3700, 90061, -5)] == ["0s", "45s", "1h1m", "1d1h", "0s"]


# -- the registry -----------------------------------------------------------------------------------


def test_delete_refuses_a_user_alias_force_drops_it_and_latest_moves(registry: Registry) -> None:
    for digest in ("a", "b", "c"):
        registry.log_version("p", "a", manifest(digest), type="dataset")
    registry.set_alias("p", "a", "best", 2)
    with pytest.raises(InvalidInput, match=r"^p/a:v2 is protected by alias best: .* --force"):
        registry.delete_version("p", "a", 2)
    assert registry.aliases("p", "a") == {"best": 2, "latest": 2}  # nothing changed
    deletion = registry.delete_version("p", "a", 2, force=True)
    assert (deletion.dropped_aliases, deletion.was_latest, deletion.latest) == (("best",), True, 1)
    assert registry.aliases("p", "a") == {"latest": 1}
    assert [v.index for v in registry.versions("p", "a")] == [0, 1]
    with pytest.raises(NotFound, match=r"^p/a:v2 was deleted \("):
        registry.resolve("p", "a", "v2")
    with pytest.raises(InvalidInput, match="was deleted already"):
        registry.delete_version("p", "a", 2)
    with pytest.raises(NotFound, match="has no version v7"):
        registry.delete_version("p", "a", 7)
    registry.delete_version("p", "a", 0)  # not the latest: latest stays
    assert registry.aliases("p", "a") == {"latest": 1}
    last = registry.delete_version("p", "a", 1)
    assert (last.was_latest, last.latest) == (True, None)
    assert registry.versions("p", "a") == [] and registry.aliases("p", "a") == {}
    assert registry.projects() == [] and registry.artifacts("p") == []  # nothing live is left to show


def test_version_numbers_are_never_reused(registry: Registry) -> None:
    for digest in ("a", "b", "c", "d"):
        registry.log_version("p", "a", manifest(digest), type="dataset")
    registry.delete_version("p", "a", 3)
    registry.collect()
    # Content equal to the deleted latest is new again (the deleted one is no comparison), with a new number.
    assert registry.log_version("p", "a", manifest("d"), type="dataset").version.index == 4


def test_ttl_hides_the_version_and_latest_falls_back(registry: Registry) -> None:
    registry.log_version("p", "a", manifest("a"), type="dataset")
    logged = registry.log_version("p", "a", manifest("b"), type="dataset", ttl=30 * 86400).version
    assert logged.expires_at == pytest.approx(logged.created_at + 30 * 86400)
    registry.set_alias("p", "a", "best", 1)
    expired = registry.set_ttl("p", "a", 1, PAST)
    assert expired.expires_at is not None and expired.expires_at <= time.time()
    assert [v.index for v in registry.versions("p", "a")] == [0]
    assert registry.aliases("p", "a") == {"latest": 0}  # an expired version's aliases go with it
    assert registry.resolve("p", "a", "latest").index == 0 and registry.artifacts("p")[0].latest_index == 0
    with pytest.raises(NotFound, match=r"^p/a:best points at v1, which expired \("):
        registry.resolve("p", "a", "best")
    with pytest.raises(NotFound, match="no version v1"):
        registry.set_alias("p", "a", "other", 1)
    assert not registry.log_version("p", "a", manifest("a"), type="dataset").created  # unchanged from v0
    revived = registry.set_ttl("p", "a", 1, None)  # not collected yet: a TTL change brings it back
    assert revived.expires_at is None and registry.aliases("p", "a") == {"best": 1, "latest": 1}


def test_ttl_on_a_deleted_or_unknown_version_changes_nothing(registry: Registry) -> None:
    registry.log_version("p", "a", manifest("a"), type="dataset")
    registry.log_version("p", "a", manifest("b"), type="dataset", ttl=3600)
    registry.delete_version("p", "a", 1)
    with pytest.raises(InvalidInput, match=r"^p/a:v1 was deleted .*: its TTL cannot change$"):
        registry.set_ttl("p", "a", 1, None)
    with pytest.raises(NotFound, match="has no version v5"):
        registry.set_ttl("p", "a", 5, 60)
    registry.collect()
    assert registry.resolve("p", "a", "v0").expires_at is None


def test_gc_removes_dead_rows_and_unused_manifests_only(registry: Registry, any_registry_url: str) -> None:
    kept = registry.log_version("p", "a", manifest("a", "b"), type="dataset").version  # v0
    gone = registry.log_version("p", "a", manifest("c", "d", "e"), type="dataset").version  # v1
    registry.log_version("p", "a", manifest("f"), type="dataset")  # v2
    shared = registry.log_version("p", "a", manifest("a", "b"), type="dataset").version  # v3: v0's manifest
    registry.log_version("q", "z", manifest("z"), type="model", ttl=PAST)  # q/z:v0, expired
    registry.delete_version("p", "a", 1)
    registry.delete_version("p", "a", 3)
    assert shared.manifest_id == kept.manifest_id
    before = node_count(any_registry_url)
    in_use = manifests_in_use(registry)
    assert kept.manifest_id in in_use and gone.manifest_id not in in_use and len(in_use) == 2

    dry = registry.collect(dry_run=True)
    assert dry.versions == (("p/a:v1", "deleted"), ("p/a:v3", "deleted"), ("q/z:v0", "expired"))
    assert {content_id for content_id, _ in dry.manifests} == {gone.manifest_id, _content_id(manifest("z"))}
    assert node_count(any_registry_url) == before  # a dry run removes nothing
    assert registry.collect(dry_run=True) == dry

    done = registry.collect()
    assert done == dry
    # Left: v0's manifest (root + 2 files) and v2's (root + 1 file); gone: v1's (root + 3) and q/z's (root + 1).
    assert node_count(any_registry_url) == 3 + 2 == before - (1 + 3) - (1 + 1)
    assert _execute(any_registry_url, "SELECT COUNT(*) FROM versions") == 2
    assert _execute(any_registry_url, "SELECT COUNT(*) FROM manifests") == 2
    assert [e.path for e in registry.iter_entries(kept.manifest_id)] == ["f0.bin", "f1.bin"]
    with pytest.raises(NotFound):
        registry.manifest_root(gone.manifest_id)
    assert registry.collect().versions == () and registry.collect().manifests == ()
    assert manifests_in_use(registry) == in_use


def test_gc_removes_unused_index_copies_of_a_shared_registry(postgres_url: str, tmp_path: Path) -> None:
    reg = open_registry(postgres_url, create=True, index_dir=tmp_path / "manifests")
    assert isinstance(reg, PostgresRegistry)
    live = reg.log_version("p", "a", manifest("a"), type="dataset").version
    dead = reg.log_version("p", "a", manifest("b"), type="dataset").version
    for version in (live, dead):
        reg.manifest_index(version.manifest_id)  # a mount reading both made local copies
    stale = tmp_path / "manifests" / f"{live.manifest_id}.v{SCHEMA_VERSION - 1}.db"  # an older schema's copy
    stale.write_bytes(b"")
    reg.delete_version("p", "a", 1)
    dry = gc(reg, dry_run=True)
    assert sorted(p.name for p in dry.index_copies) == sorted([f"{dead.manifest_id}.v{SCHEMA_VERSION}.db", stale.name])
    assert all(p.exists() for p in dry.index_copies)
    report = gc(reg)
    assert report.index_copies == dry.index_copies and not any(p.exists() for p in report.index_copies)
    assert [p.name for p in (tmp_path / "manifests").iterdir()] == [f"{live.manifest_id}.v{SCHEMA_VERSION}.db"]
    reg.close()


def _gc_in_a_process(url: str, index_dir: str, out: Any) -> None:
    reg = open_registry(url, index_dir=Path(index_dir))
    out.put(reg.collect())
    reg.close()


def _log_in_a_process(url: str, digests: list[str], out: Any) -> None:
    reg = open_registry(url)
    out.put([reg.log_version("p", "a", manifest(d), type="dataset").version.index for d in digests])
    reg.close()


def test_two_gc_runs_and_a_logger_at_once_do_no_harm(any_registry_url: str, tmp_path: Path) -> None:
    """Each dead version and unused manifest is removed by exactly one run; a logger reusing content that gc
    removes meanwhile gets its version, complete."""
    reg = open_registry(any_registry_url, create=True)
    digests = [f"d{i}" for i in range(40)]
    for digest in digests:
        reg.log_version("p", "a", manifest(digest), type="dataset")
    for index in range(39):
        reg.delete_version("p", "a", index)
    reg.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    runs = [ctx.Process(target=_gc_in_a_process, args=(any_registry_url, str(tmp_path / f"i{n}"), out))
            for n in range(2)]  # fmt: skip
    runs.append(ctx.Process(target=_log_in_a_process, args=(any_registry_url, digests[:10], out)))
    for p in runs:
        p.start()
    results = [out.get(timeout=120) for _ in runs]
    for p in runs:
        p.join(30)
        assert p.exitcode == 0
    logged = next(r for r in results if isinstance(r, list))
    assert logged == list(range(40, 50))  # never a number used before
    removed = [name for r in results if not isinstance(r, list) for name, _ in r.versions]
    assert len(removed) == len(set(removed)) and set(removed) == {f"p/a:v{i}" for i in range(39)}
    reg = open_registry(any_registry_url)
    if isinstance(reg, PostgresRegistry):
        reg.index_dir = tmp_path / "check"
    versions = reg.versions("p", "a")
    assert [v.index for v in versions] == list(range(39, 50))
    for version in versions:  # every version left reads back whole
        assert reg.manifest(version.manifest_id).digest == version.digest
    reg.close()


def _content_id(m: Manifest) -> str:
    return m.content_id


# -- upgrade from schema v2 --------------------------------------------------------------------------

V2_COMMIT = "856c150"  # refmount at schema v2, the last before retention
V2_SCRIPT = textwrap.dedent("""
    import sys
    from refmount.manifest import Entry, Manifest
    from refmount.registry import open_registry
    from refmount.registry.sql import SCHEMA_VERSION
    assert SCHEMA_VERSION == 2, SCHEMA_VERSION
    reg = open_registry(sys.argv[1], create=True)
    for i, digests in enumerate((["a"], ["a", "b"], ["c"])):
        m = Manifest(Entry(f"d{j}/f{j}.bin", f"s3://b/f{j}%41.bin", d, 10 + j, {"etag": d})
                     for j, d in enumerate(digests))
        reg.log_version("vision", "mnist", m, type="dataset", description=f"n{i}", metadata={"i": i})
    reg.log_version("other", "model", Manifest([Entry("w.pt", "s3://b/w.pt", "w", 7, {"etag": "w"})]), type="model")
    reg.set_alias("vision", "mnist", "best", 1)
    reg.close()
""")


def upgraded(commit: str, script: str, schema: int, url: str, tmp_path: Path) -> Registry:
    """The registry at ``url`` that ``script`` made with refmount's code as of ``commit`` (schema ``schema``),
    opened, and so upgraded, by this code. The code comes from this clone by `git archive`, so the clone needs
    that commit (a shallow clone lacks it: `git fetch --unshallow`)."""
    source = tmp_path / commit
    source.mkdir()
    repo = Path(__file__).resolve().parent.parent
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit, "refmount"], capture_output=True)
    assert archive.returncode == 0, f"commit {commit} is not in this clone: {archive.stderr.decode().strip()}"
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    env = {**os.environ, "PYTHONPATH": str(source)}
    subprocess.run([sys.executable, "-c", script, url], env=env, check=True, cwd=tmp_path)
    assert _execute(url, "SELECT MAX(version) FROM schema_version") == schema
    reg = open_registry(url)
    if isinstance(reg, PostgresRegistry):
        reg.index_dir = tmp_path / "index"
    assert _execute(url, "SELECT MAX(version) FROM schema_version") == SCHEMA_VERSION
    return reg


def test_a_schema_v2_registry_made_by_the_previous_code_upgrades_without_losing_data(
    any_registry_url: str, tmp_path: Path
) -> None:
    reg = upgraded(V2_COMMIT, V2_SCRIPT, 2, any_registry_url, tmp_path)
    versions = reg.versions("vision", "mnist")
    assert [(v.index, v.description, dict(v.metadata), v.aliases, v.expires_at) for v in versions] == [
        (0, "n0", {"i": 0}, (), None),
        (1, "n1", {"i": 1}, ("best",), None),
        (2, "n2", {"i": 2}, ("latest",), None),
    ]
    entries = list(reg.iter_entries(versions[1].manifest_id))
    assert [(e.path, e.ref, e.digest, e.size, e.ref_quoted) for e in entries] == [
        ("d0/f0.bin", "s3://b/f0%41.bin", "a", 10, False),  # v2 refs are kept as written
        ("d1/f1.bin", "s3://b/f1%41.bin", "b", 11, False),
    ]
    assert reg.resolve("other", "model", "latest").file_count == 1
    assert reg.projects() == ["other", "vision"]
    # Retention works on the upgraded rows, and numbering continues from what v2 logged.
    reg.delete_version("vision", "mnist", 2)
    reg.collect()
    assert reg.log_version("vision", "mnist", manifest("new"), type="dataset").version.index == 3
    reg.close()


# -- the command line --------------------------------------------------------------------------------


def test_cli_ttl_delete_and_gc(cli: Cli, data: Path) -> None:
    uri = file_uri(data) + "/"
    for n in range(3):
        (data / "labels.csv").write_text(f"{n}\n")
        cli("log", "vision/mnist", uri, *(["--ttl", "30d"] if n == 1 else []))
    logged = cli("log", "vision/mnist", uri, "--ttl", "2w")
    assert "unchanged, still vision/mnist:v2" in logged.out and "--ttl applies to new versions only" in logged.err
    (data / "labels.csv").write_text("3\n")
    assert "expires " in cli("log", "vision/mnist", uri, "--ttl", "12h").out
    rows = {v["version"]: v for v in cli("ls", "vision/mnist", "--json").json()}
    assert rows["v0"]["expires_at"] is None
    assert rows["v1"]["expires_at"] == pytest.approx(rows["v1"]["created_at"] + 30 * 86400)
    table = cli("ls", "vision/mnist").out  # piped: tab-separated, a header, one row per version
    header, *lines = [line.split("\t") for line in table.splitlines()]
    assert header[-2:] == ["expires", "ttl_left"]
    left = {line[0]: line[-1] for line in lines}
    assert left["v0"] == "-" and left["v1"].startswith(("29d", "30d")) and left["v3"].startswith(("11h", "12h"))

    assert cli("ttl", "vision/mnist:v1", "none").out == "vision/mnist:v1: no TTL (kept until deleted)\n"
    assert "expires " in cli("ttl", "vision/mnist:v0", "90d").out
    cli("alias", "vision/mnist:v2", "best")
    before = snapshot(cli)
    for args, message in [
        (("ttl", "vision/mnist:v1", "30x"), "invalid TTL '30x'"),
        (("ttl", "--", "vision/mnist:v1", "-5d"), "invalid TTL '-5d'"),
        (("log", "vision/mnist", uri, "--ttl", "-5d"), "invalid TTL '-5d'"),
        (("ttl", "vision/mnist:v1", "0d"), "invalid TTL '0d'"),
        (("ttl", "vision/mnist:v9", "1d"), "vision/mnist has no version v9"),
        (("ttl", "vision/mnist", "1d"), "expected PROJECT/ARTIFACT:VERSION"),
        (("delete", "vision/mnist:v2"), "vision/mnist:v2 is protected by alias best"),
        (("delete", "vision/mnist:v9"), "vision/mnist has no version v9"),
        (("delete", "vision/nope:v0"), "no artifact vision/nope"),
        (("log", "vision/mnist", uri, "--ttl", "30x"), "invalid TTL '30x'"),
    ]:
        result = cli(*args, ok=False)
        assert result.code in (2, 3) and message in result.err and len(result.err.splitlines()) == 1, result
        assert snapshot(cli) == before, args

    deleted = cli("delete", "vision/mnist:v3").out
    assert deleted == ("deleted vision/mnist:v3 (`refmount gc` removes what is left of it)\n"
                       "vision/mnist:latest now points at v2\n")  # fmt: skip
    forced = cli("delete", "vision/mnist:best", "--force").out
    assert forced.startswith("deleted vision/mnist:v2; removed alias best") and "latest now points at v1" in forced
    result = cli("ttl", "vision/mnist:v3", "1d", ok=False)
    assert "vision/mnist:v3 was deleted" in result.err and "its TTL cannot change" in result.err
    for args in (("show", "vision/mnist:v3"), ("export", "vision/mnist:v2")):
        assert "was deleted" in cli(*args, ok=False).err
    assert [v["version"] for v in cli("ls", "vision/mnist", "--json").json()] == ["v0", "v1"]
    assert cli("ls", "vision", "--json").json()[0]["latest"] == "v1"

    before = snapshot(cli)
    dry = cli("gc", "--dry-run")
    assert dry.out.startswith("would remove vision/mnist:v2 (deleted)\nwould remove vision/mnist:v3 (deleted)\n")
    assert dry.out.count("would remove manifest ") == 2 and "would remove 2 versions, 2 manifests" in dry.err
    assert snapshot(cli) == before and cli("gc", "--dry-run", "--json").json()["dry_run"] is True
    done = cli("gc", "--json").json()
    assert [v["name"] for v in done["versions"]] == ["vision/mnist:v2", "vision/mnist:v3"]
    assert len(done["manifests"]) == 2 and snapshot(cli) == before
    assert "removed 0 versions, 0 manifests" in cli("gc").err
    (data / "labels.csv").write_text("4\n")
    assert "logged vision/mnist:v4" in cli("log", "vision/mnist", uri).out  # v2 and v3 are never reused


def test_cli_delete_and_gc_on_a_shared_registry(
    postgres_url: str, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = Cli(postgres_url)
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))  # gc sweeps this node's index copies there
    for n in range(2):
        (data / "labels.csv").write_text(f"{n}\n")
        cli("log", "vision/mnist", file_uri(data))
    reg = open_registry(postgres_url, index_dir=tmp_path / "cache" / "manifests")
    dead = reg.resolve("vision", "mnist", "v1").manifest_id
    for label in ("v0", "v1"):  # what a mount on this node copies when it looks inside each version
        reg.manifest_index(reg.resolve("vision", "mnist", label).manifest_id)
    reg.close()
    assert cli("delete", "vision/mnist:latest").out.endswith("vision/mnist:latest now points at v0\n")
    copy = tmp_path / "cache" / "manifests" / f"{dead}.v{SCHEMA_VERSION}.db"
    assert f"would remove index copy {copy}" in cli("gc", "--dry-run").out and copy.exists()
    done = cli("gc")
    assert done.out.splitlines() == ["removed vision/mnist:v1 (deleted)", f"removed manifest {dead[:12]} (4 files)",
                                     f"removed index copy {copy}"]  # fmt: skip
    assert not copy.exists() and len(list((tmp_path / "cache" / "manifests").iterdir())) == 1
    assert [v["version"] for v in cli("ls", "vision/mnist", "--json").json()] == ["v0"]


def test_cli_help_explains_every_option(cli: Cli) -> None:
    assert "--force" in cli("delete", "--help").out and "--dry-run" in cli("gc", "--help").out
    assert "none" in cli("ttl", "--help").out and "--ttl TTL" in cli("log", "--help").out
    for command in ("ttl", "delete", "gc"):
        assert f"  {command} " in cli("--help").out


# -- readers: the API, download and the mount ---------------------------------------------------------


def test_api_ttl_and_deleted_versions(tmp_path: Path, registry_url: str) -> None:
    make_tree(tmp_path / "src", 0)
    art = refmount.Artifact("ds", ttl=timedelta(days=30))
    art.add_reference(file_uri(tmp_path / "src"))
    assert refmount.log_artifact(art, project="p", registry=registry_url) == "p/ds:v0"
    version = refmount.use_artifact("p/ds:v0", registry=registry_url)
    assert version.expires_at == pytest.approx(version.created_at + 30 * 86400)
    with pytest.raises(InvalidInput, match="a TTL must be positive"):
        refmount.log_artifact(refmount.Artifact("x", ttl=timedelta(0)), project="p", registry=registry_url)
    open_registry(registry_url).delete_version("p", "ds", 0)
    with pytest.raises(NotFound, match="p/ds:v0 was deleted"):
        refmount.use_artifact("p/ds:v0", registry=registry_url)
    with pytest.raises(NotFound, match="has no alias 'latest'"):
        refmount.use_artifact("p/ds", registry=registry_url)


def test_download_of_a_deleted_version_is_refused(cli: Cli, data: Path, tmp_path: Path) -> None:
    cli("log", "vision/mnist", file_uri(data))
    cli("delete", "vision/mnist:v0")
    result = cli("download", "vision/mnist:v0", str(tmp_path / "out"), ok=False)
    assert "vision/mnist:v0 was deleted" in result.err and not (tmp_path / "out").exists()


def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_mount_drops_deleted_and_expired_versions_open_files_keep_reading(
    tmp_path: Path, registry_url: str, mount_factory: Any
) -> None:
    trees = [make_tree(tmp_path / f"src{n}", n) for n in range(3)]
    for n in range(3):
        log(registry_url, "p/ds", file_uri(tmp_path / f"src{n}"))
    m = mount_factory(alias_ttl=0.5)
    ds = m.path / "p/ds"
    assert sorted(os.listdir(ds)) == ["latest", "v0", "v1", "v2"] and os.readlink(ds / "latest") == "v2"
    held = open(ds / "v2/labels.csv", "rb")  # noqa: SIM115 - held open across the delete
    (ds / "v2/big.bin").stat()  # `v2` is in the kernel's dentry cache now
    reg = open_registry(registry_url)
    reg.delete_version("p", "ds", 2)
    _until(lambda: not (ds / "v2").exists(), "the deleted version stayed on the mount")
    assert sorted(os.listdir(ds)) == ["latest", "v0", "v1"] and os.readlink(ds / "latest") == "v1"
    with pytest.raises(FileNotFoundError):
        (ds / "v2/labels.csv").read_bytes()
    assert held.read() == trees[2]["labels.csv"]  # opened before the delete: still served
    held.close()

    (ds / "v1/labels.csv").read_bytes()
    reg.set_ttl("p", "ds", 1, PAST)
    _until(lambda: not (ds / "v1").exists(), "the expired version stayed on the mount")
    assert sorted(os.listdir(ds)) == ["latest", "v0"] and os.readlink(ds / "latest") == "v0"
    assert (ds / "latest/labels.csv").read_bytes() == trees[0]["labels.csv"]
    reg.collect()
    assert (ds / "v0/big.bin").read_bytes() == trees[0]["big.bin"]  # gc leaves live versions alone
    reg.close()
