"""gs:// references against a real fake-gcs-server: listing, generation pinning, failures, the CLI."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gcsfs.core
import pytest
from gcsfs.extended_gcsfs import ExtendedGcsFileSystem

from refmount.errors import ChangedObject, InvalidInput, NotFound, StoreError
from refmount.manifest import Entry
from refmount.stores import Stores, parse, store_for
from refmount.stores.gcs import GCSStore
from tests.conftest import Cli
from tests.server_gcs import GCSEnv
from tests.server_http import GCS_DENIAL, Served
from tests.servers import free_port


def scan(uri: str, **kw) -> list[Entry]:
    return list(store_for("gs").scan(parse(uri), **kw))


def by_path(uri: str, **kw) -> dict[str, Entry]:
    return {e.path: e for e in scan(uri, **kw)}


@pytest.fixture
def store(gcs_env: GCSEnv) -> GCSStore:
    s = store_for("gs")
    assert isinstance(s, GCSStore)
    return s


@pytest.mark.parametrize("versioned", [False, True])
def test_prefix_scan(gcs_env: GCSEnv, versioned: bool) -> None:
    b = gcs_env.bucket(versioned=versioned)
    for key, body in {"data/a.txt": b"a", "data/sub/deep/b.bin": b"bb", "data/empty": b"", "data/folder/": b"",
                      "data2/x": b"sibling", "other": b"o"}.items():  # fmt: skip
        gcs_env.put(b, key, body)
    put = gcs_env.put(b, "data/a.txt", b"a2")  # overwritten: the live generation is what gets logged
    for uri in (f"gs://{b}/data", f"gs://{b}/data/"):
        entries = by_path(uri)
        assert set(entries) == {"a.txt", "sub/deep/b.bin", "empty"}  # no folder marker, no data2/
    a = entries["a.txt"]
    assert a.digest == put["etag"] and a.etag is None and a.size == 2 and a.ref == f"gs://{b}/data/a.txt"
    assert a.extra["versionID"] == int(put["generation"]) and a.version_id == put["generation"]
    assert entries["empty"].size == 0
    assert set(by_path(f"gs://{b}")) == {"data/a.txt", "data/sub/deep/b.bin", "data/empty", "data2/x", "other"}
    assert set(by_path(f"gs://{b}/data", name="imgs")) == {"imgs/a.txt", "imgs/sub/deep/b.bin", "imgs/empty"}


def test_single_object_and_generation(gcs_env: GCSEnv) -> None:
    b = gcs_env.bucket(versioned=True)
    first = gcs_env.put(b, "models/cnn/model.h5", b"weights-1")
    gcs_env.put(b, "models/cnn/model.h5", b"weights-two")
    (latest,) = scan(f"gs://{b}/models/cnn/model.h5")
    assert latest.path == "model.h5" and latest.size == len(b"weights-two")
    (old,) = scan(f"gs://{b}/models/cnn/model.h5?generation={first['generation']}", name="ckpt/old.h5")
    assert old.path == "ckpt/old.h5" and old.size == 9 and old.digest == first["etag"]
    assert old.version_id == first["generation"] and old.ref == f"gs://{b}/models/cnn/model.h5"
    assert store_for("gs").read(old, 0, 100) == b"weights-1"
    with pytest.raises(NotFound, match="no such object generation"):
        scan(f"gs://{b}/models/cnn/model.h5?generation=12345")


def test_object_wins_over_directory_of_same_name(gcs_env: GCSEnv) -> None:
    b = gcs_env.bucket()
    gcs_env.put(b, "data", b"file")
    gcs_env.put(b, "data/child", b"child")
    (only,) = scan(f"gs://{b}/data")
    assert only.path == "data" and only.size == 4
    assert set(by_path(f"gs://{b}/data/")) == {"child"}


def test_checksum_false_and_max_objects(gcs_env: GCSEnv) -> None:
    b = gcs_env.bucket()
    for i in range(3):
        gcs_env.put(b, f"p/{i}", b"x")
    (location,) = scan(f"gs://{b}/p/", checksum=False, name="loc")
    assert location.digest == location.ref == f"gs://{b}/p/" and location.path == "loc" and not location.is_snapshot
    assert len(scan(f"gs://{b}/p/", max_objects=3)) == 3


def test_errors_name_the_reference(gcs_env: GCSEnv, nginx: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    b = gcs_env.bucket()
    gcs_env.put(b, "p/x", b"x")
    with pytest.raises(NotFound, match=f"no objects under gs://{b}/nothing/"):
        scan(f"gs://{b}/nothing")
    with pytest.raises(InvalidInput, match="no bucket name"):
        scan("gs:///key")
    with pytest.raises(InvalidInput, match="unsupported query parameter"):
        scan(f"gs://{b}/p/x?alt=media")
    endpoints = {f"{nginx.url}/gcs-denied": f"gs://{b}/p: access denied \\({re.escape(GCS_DENIAL)}\\)",
                 f"http://127.0.0.1:{free_port()}": f"gs://{b}/p: cannot reach the GCS endpoint"}  # fmt: skip
    for endpoint, message in endpoints.items():
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        with pytest.raises(StoreError, match=message) as info:
            scan(f"gs://{b}/p")
        assert "\n" not in str(info.value)


def test_reads_are_pinned_to_the_generation(gcs_env: GCSEnv, store: GCSStore) -> None:
    versioned, plain = gcs_env.bucket(versioned=True), gcs_env.bucket()
    body = bytes(range(256)) * 40
    for b in (versioned, plain):
        gcs_env.put(b, "k", body)
    pinned, unversioned = scan(f"gs://{versioned}/k")[0], scan(f"gs://{plain}/k")[0]
    for b in (versioned, plain):
        gcs_env.put(b, "k", b"overwritten")
    assert store.read(pinned, 0, 10) == body[:10]  # the logged generation, still there
    assert store.read(pinned, 5000, 50) == body[5000:5050]
    store.check(pinned)
    # Without versioning the logged generation is gone: an error, never the new bytes.
    with pytest.raises(ChangedObject, match="generation no longer exists") as info:
        store.read(unversioned, 0, 10)
    assert unversioned.ref in str(info.value) and unversioned.path in str(info.value)
    with pytest.raises(ChangedObject):
        store.check(unversioned)


def test_outside_the_checked_gcsfs_versions_the_plain_filesystem_serves(
    gcs_env: GCSEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from refmount import compat

    monkeypatch.setitem(compat.CHECKED, "gcsfs", ("0", "1"))
    compat.checked.cache_clear()
    try:
        store = Stores().store_for("gs")  # built now, with the version check's new answer
        assert isinstance(store, GCSStore) and type(store.fs) is gcsfs.core.GCSFileSystem  # gcsfs's own retries
        b = gcs_env.bucket(versioned=True)
        gcs_env.put(b, "k", b"logged")
        (entry,) = store.scan(parse(f"gs://{b}/k"))
        gcs_env.put(b, "k", b"other!")
        assert store.read(entry, 0, 6) == b"logged"
    finally:
        compat.checked.cache_clear()


def test_entry_without_generation_is_guarded_by_etag(gcs_env: GCSEnv, store: GCSStore) -> None:
    """An imported manifest may lack the generation: the current one is used only if the etag matches."""
    b = gcs_env.bucket()
    put = gcs_env.put(b, "k", b"original")
    entry = Entry(path="k", ref=f"gs://{b}/k", digest=put["etag"], size=8)
    assert store.read(entry, 2, 4) == b"igin"
    gcs_env.put(b, "k", b"replaced")
    with pytest.raises(ChangedObject, match="etag differs"):
        store.read(entry, 0, 4)


@pytest.fixture
def grpc_tripwires(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make gcsfs's gRPC bucket-type probe fail loudly if anything reaches it."""
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "true")  # gcsfs's default: the trap is armed

    def tripped(*_: object, **__: object) -> None:
        raise AssertionError("gcsfs took the gRPC storage-layout path")

    for method in ("_lookup_bucket_type", "_get_bucket_type", "_get_control_plane_client", "_get_grpc_client"):
        monkeypatch.setattr(ExtendedGcsFileSystem, method, tripped)
    yield


def test_never_takes_the_grpc_path(gcs_env: GCSEnv, grpc_tripwires: None) -> None:
    store = store_for("gs")
    assert isinstance(store, GCSStore) and isinstance(store.fs, gcsfs.core.GCSFileSystem)
    assert not isinstance(store.fs, ExtendedGcsFileSystem)  # what `import gcsfs` hands out by default in 2026.x
    b = gcs_env.bucket(versioned=True)
    gcs_env.put(b, "d/k", b"bytes")
    (entry,) = scan(f"gs://{b}/d/")
    assert store.read(entry, 1, 3) == b"yte"
    store.check(entry)


def test_cli_log_show_relog_and_change(gcs_env: GCSEnv, cli: Cli) -> None:
    b = gcs_env.bucket(versioned=True)
    for i in range(3):
        gcs_env.put(b, f"datasets/mnist/train/{i:04}.png", b"png%d" % i)
    gcs_env.put(b, "datasets/mnist2/other", b"sibling")
    first = cli("log", "vision/mnist", f"gs://{b}/datasets/mnist", "--type", "dataset", "--json").json()
    assert first["name"] == "vision/mnist:v0" and first["files"] == 3
    assert not cli("log", "vision/mnist", f"gs://{b}/datasets/mnist/", "--json").json()["created"]
    put = gcs_env.put(b, "datasets/mnist/train/0001.png", b"changed")
    assert cli("log", "vision/mnist", f"gs://{b}/datasets/mnist/", "--json").json()["name"] == "vision/mnist:v1"
    entry = json.loads(cli("show", "vision/mnist:v1", "--json").out)["contents"]["train/0001.png"]
    assert entry == {"digest": put["etag"], "ref": f"gs://{b}/datasets/mnist/train/0001.png", "size": 7,
                     "extra": {"versionID": int(put["generation"])}}  # fmt: skip
    result = cli("log", "vision/mnist", "gs://no-such-bucket-y/x/", ok=False)
    assert "does not exist" in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_download_and_verify(gcs_env: GCSEnv, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    versioned, plain = gcs_env.bucket(versioned=True), gcs_env.bucket()
    files = {"a.bin": os.urandom(20_000), "sub/b.bin": os.urandom(9 << 20), "empty": b""}
    for b in (versioned, plain):
        for key, body in files.items():
            gcs_env.put(b, f"ds/{key}", body)
        cli("log", f"p/{b}", f"gs://{b}/ds/")
        gcs_env.put(b, "ds/a.bin", b"overwritten")
    cli("download", f"p/{versioned}", str(tmp_path / "out"), "--no-cache", "-q")
    assert {k: (tmp_path / "out" / k).read_bytes() for k in files} == files  # the logged generations
    assert "3 of 3 references resolve" in cli("verify", f"p/{versioned}", "-q").out
    result = cli("verify", f"p/{plain}", "-q", ok=False)
    assert "2 of 3" in result.out and f"gs://{plain}/ds/a.bin" in result.err and result.code == 4


def test_mount_reads_the_logged_generation(gcs_env: GCSEnv, cli: Cli, mount_factory: Any) -> None:
    versioned, plain = gcs_env.bucket(versioned=True), gcs_env.bucket()
    other = os.urandom(1000)
    for b in (versioned, plain):
        gcs_env.put(b, "ds/a.bin", b"logged bytes")
        gcs_env.put(b, "ds/sub/b.bin", other)
        cli("log", f"p/{b}", f"gs://{b}/ds/")
    m = mount_factory()
    for b in (versioned, plain):
        gcs_env.put(b, "ds/a.bin", b"NEW BYTES!!!")  # same size, other bytes
    assert (m.path / f"p/{versioned}/v0/a.bin").read_bytes() == b"logged bytes"
    assert (m.path / f"p/{plain}/v0/sub/b.bin").read_bytes() == other
    with pytest.raises(OSError) as info:
        (m.path / f"p/{plain}/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO and "generation no longer exists" in m.log()


def test_credentials_from_google_auth_never_a_metadata_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gcsfs's own chain would end in a GCE metadata probe (about 15 s off Google Cloud)."""
    for var in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default login either
    store = store_for("gs")
    assert isinstance(store, GCSStore) and store.fs.credentials.method == "anon"  # public buckets still work
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(StoreError, match=r"gs://b/x: Google credentials failed .*missing\.json") as info:
        scan("gs://b/x")
    assert "\n" not in str(info.value)


def test_odd_object_names_read_the_right_object(gcs_env: GCSEnv, store: GCSStore) -> None:
    """'#' and '?' belong to the name: never taken for a generation or a query (gcsfs's path syntax would).
    Such a name's ref is percent-encoded and marked so; others go in as they are, as W&B writes them."""
    b = gcs_env.bucket(versioned=True)
    gcs_env.put(b, "odd/a", b"the wrong object")
    odd = gcs_env.put(b, "odd/a?x=1#2 100%.txt", b"the right object")
    gcs_env.put(b, "odd/b 100%.txt", b"the plain object")
    found = {e.path: e for e in scan(f"gs://{b}/odd/")}
    assert set(found) == {"a", "a?x=1#2 100%.txt", "b 100%.txt"}
    cut, plain = found["a?x=1#2 100%.txt"], found["b 100%.txt"]
    assert cut.ref == f"gs://{b}/odd/a%3Fx=1%232 100%25.txt" and cut.ref_quoted
    assert cut.version_id == odd["generation"] and store.read(cut, 4, 5) == b"right"
    assert plain.ref == f"gs://{b}/odd/b 100%.txt" and not plain.ref_quoted and store.read(plain, 4, 5) == b"plain"
    (single,) = scan(plain.ref)
    assert single.digest == plain.digest
