"""Azure Blob references against a real Azurite, and one manifest that mixes every scheme.

Azurite keeps no blob versions, so these tests show reads guarded by If-Match (an overwrite
fails) and do not test pinning to a version id.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from refmount.errors import ChangedObject, InvalidInput, NotFound, StoreError
from refmount.manifest import Entry
from refmount.stores import parse, store_for
from refmount.stores.azure import AzureStore
from refmount.stores.file import file_uri
from refmount.stores.http import HTTPStore
from tests.conftest import Cli
from tests.server_azure import ACCOUNT, KEY, AzureEnv
from tests.server_gcs import GCSEnv
from tests.server_http import HTTPDir
from tests.servers import free_port

BODY = bytes(range(256)) * 40


def scan(uri: str, **kw) -> list[Entry]:
    return list(store_for(uri).scan(parse(uri), **kw))


def by_path(uri: str, **kw) -> dict[str, Entry]:
    return {e.path: e for e in scan(uri, **kw)}


@pytest.fixture
def store(azure_env: AzureEnv) -> AzureStore:
    s = store_for("az")
    assert isinstance(s, AzureStore)
    return s


def test_prefix_scan(azure_env: AzureEnv) -> None:
    c = azure_env.container()
    for key, body in {"data/a.txt": b"a", "data/sub/deep/b.bin": b"bb", "data/empty": b"", "data/folder/": b"",
                      "data2/x": b"sibling", "other": b"o"}.items():  # fmt: skip
        azure_env.put(c, key, body)
    azure_env.put(c, "data/adls-dir", b"", metadata={"hdi_isfolder": "true"})  # an ADLS Gen2 directory...
    azure_env.put(c, "data/adls-dir/in.txt", b"inside")  # ...and a blob in it
    put = azure_env.put(c, "data/a.txt", b"a2")
    for uri in (f"az://{c}/data", f"az://{c}/data/"):
        entries = by_path(uri)
        assert set(entries) == {"a.txt", "sub/deep/b.bin", "empty", "adls-dir/in.txt"}  # no markers, no data2/
    a = entries["a.txt"]
    assert a.digest == put["etag"].strip('"') == a.etag and a.size == 2 and a.ref == f"az://{c}/data/a.txt"
    assert a.version_id is None  # Azurite keeps no versions
    assert entries["empty"].size == 0
    assert set(by_path(f"az://{c}")) == {"data/a.txt", "data/sub/deep/b.bin", "data/empty", "data/adls-dir/in.txt",
                                         "data2/x", "other"}  # fmt: skip
    assert set(by_path(f"az://{c}/data/sub", name="imgs")) == {"imgs/deep/b.bin"}
    assert set(by_path(f"az://{c}/data/adls-dir")) == {"in.txt"}  # the directory's marker is not the reference


def test_single_blob_and_object_over_directory(azure_env: AzureEnv) -> None:
    c = azure_env.container()
    azure_env.put(c, "models/cnn/model.h5", b"weights")
    (single,) = scan(f"az://{c}/models/cnn/model.h5", name="ckpt/best.h5")
    assert single.path == "ckpt/best.h5" and single.size == 7 and single.ref == f"az://{c}/models/cnn/model.h5"
    azure_env.put(c, "data", b"file")
    azure_env.put(c, "data/child", b"child")
    (only,) = scan(f"az://{c}/data")
    assert only.path == "data" and only.size == 4
    assert set(by_path(f"az://{c}/data/")) == {"child"}


def test_checksum_false_and_max_objects(azure_env: AzureEnv) -> None:
    c = azure_env.container()
    for i in range(3):
        azure_env.put(c, f"p/{i}", b"x")
    (location,) = scan(f"az://{c}/p/", checksum=False)
    assert location.digest == location.ref == f"az://{c}/p/" and location.path == "p" and not location.is_snapshot
    assert len(scan(f"az://{c}/p/", max_objects=3)) == 3


def test_https_blob_urls_route_to_azure(azure_env: AzureEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(store_for("https://acct.blob.core.windows.net/c/k"), AzureStore)
    assert isinstance(store_for("https://example.com/c/k"), HTTPStore)
    with monkeypatch.context() as env:  # a national cloud's URL is served by that cloud's endpoint
        env.delenv("AZURE_STORAGE_CONNECTION_STRING")
        env.setenv("AZURE_STORAGE_KEY", KEY)
        url = "https://acct.blob.core.chinacloudapi.cn/c/k"
        client = AzureStore().client("acct.blob.core.chinacloudapi.cn", url)  # built only: nothing is sent
        assert isinstance(store_for(url), AzureStore) and client.url == "https://acct.blob.core.chinacloudapi.cn/"
    c = azure_env.container()
    azure_env.put(c, "d/k.bin", BODY)
    # The connection string is for this account, so it says how to reach it (here: Azurite).
    url = f"https://{ACCOUNT}.blob.core.windows.net/{c}/d/"
    (entry,) = scan(url)
    assert entry.path == "k.bin" and entry.ref == f"https://{ACCOUNT}.blob.core.windows.net/{c}/d/k.bin"
    assert store_for(entry.ref).read(entry, 100, 10) == BODY[100:110]


def test_errors_name_the_reference(azure_env: AzureEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    c = azure_env.container()
    azure_env.put(c, "p/x", b"x")
    missing = f"az://no-such-container/p: container 'no-such-container' does not exist in '{ACCOUNT}'"
    with pytest.raises(NotFound, match=missing):  # the account named (the contract tests check the rest)
        scan("az://no-such-container/p")
    with pytest.raises(NotFound, match=f"no blobs under az://{c}/nothing/"):
        scan(f"az://{c}/nothing")
    with pytest.raises(InvalidInput, match="query parameters"):
        scan(f"az://{c}/p?comp=list")
    with pytest.raises(InvalidInput, match="not an Azure Blob URL"):
        AzureStore().scan(parse("https://example.com/c/p"))
    wrong_key = azure_env.server.connection_string.replace("AccountKey=", "AccountKey=AAAA")
    unreachable = azure_env.server.connection_string.replace(azure_env.server.endpoint.split("/")[2],
                                                             f"127.0.0.1:{free_port()}")  # fmt: skip
    for connection_string, error in ((wrong_key, "access denied"), (unreachable, "cannot reach the Azure endpoint")):
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string)
        with pytest.raises(StoreError, match=error) as info:
            scan(f"az://{c}/p/")
        assert str(info.value).startswith(f"az://{c}/p/") and "\n" not in str(info.value)
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(StoreError, match="no Azure storage account"):
        scan(f"az://{c}/p/")


def test_reads_are_guarded_by_etag(azure_env: AzureEnv, store: AzureStore) -> None:
    c = azure_env.container()
    azure_env.put(c, "k", BODY)
    (entry,) = scan(f"az://{c}/k")
    azure_env.put(c, "k", bytes(len(BODY)))  # same size, other bytes: only the ETag tells
    with pytest.raises(ChangedObject, match="overwritten"):
        store.read(entry, 0, 10)
    with pytest.raises(ChangedObject):
        store.check(entry)


def test_cli_log_show_relog_and_change(azure_env: AzureEnv, cli: Cli) -> None:
    c = azure_env.container()
    for i in range(3):
        azure_env.put(c, f"datasets/mnist/train/{i:04}.png", b"png%d" % i)
    azure_env.put(c, "datasets/mnist2/other", b"sibling")
    first = cli("log", "vision/mnist", f"az://{c}/datasets/mnist", "--type", "dataset", "--json").json()
    assert first["name"] == "vision/mnist:v0" and first["files"] == 3
    assert not cli("log", "vision/mnist", f"az://{c}/datasets/mnist/", "--json").json()["created"]
    put = azure_env.put(c, "datasets/mnist/train/0001.png", b"changed")
    assert cli("log", "vision/mnist", f"az://{c}/datasets/mnist/", "--json").json()["name"] == "vision/mnist:v1"
    entry = json.loads(cli("show", "vision/mnist:v1", "--json").out)["contents"]["train/0001.png"]
    etag = put["etag"].strip('"')
    assert entry == {"digest": etag, "ref": f"az://{c}/datasets/mnist/train/0001.png", "size": 7,
                     "extra": {"etag": etag}}  # fmt: skip
    result = cli("log", "vision/mnist", "az://no-such-container/x/", ok=False)
    assert "does not exist" in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_one_manifest_mixes_every_scheme(azure_env: AzureEnv, gcs_env: GCSEnv, nginx_dir: HTTPDir, cli: Cli,
                                         tmp_path: Path) -> None:  # fmt: skip
    local = tmp_path / "labels.csv"
    local.write_bytes(b"a,b\n")
    bucket, container = gcs_env.bucket(versioned=True), azure_env.container()
    gcs_env.put(bucket, "train/x.bin", b"gcs")
    azure_env.put(container, "val/y.bin", b"azure")
    refs = {"labels.csv": file_uri(local), "gcs": f"gs://{bucket}/train/", "web/z.bin": nginx_dir.put("z.bin", b"web"),
            "azure": f"az://{container}/val/"}  # fmt: skip
    args = ["log", "mixed/all", *refs.values()]
    for name in refs:
        args += ["--name", name]
    assert cli(*args, "--json").json()["files"] == 4
    contents = json.loads(cli("show", "mixed/all:v0", "--json").out)["contents"]
    assert {path: e["ref"].partition(":")[0] for path, e in contents.items()} == {
        "labels.csv": "file", "gcs/x.bin": "gs", "web/z.bin": "http", "azure/y.bin": "az"}  # fmt: skip
    bodies = {"labels.csv": b"a,b\n", "gcs/x.bin": b"gcs", "web/z.bin": b"web", "azure/y.bin": b"azure"}
    for path, body in bodies.items():
        entry = Entry.from_json(path, contents[path])
        assert store_for(entry.ref).read(entry, 0, 100) == body
    assert not cli(*args, "--json").json()["created"]


def test_download_and_verify(azure_env: AzureEnv, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFMOUNT_CACHE_DIR", str(tmp_path / "cache"))
    c = azure_env.container()
    files = {"a.bin": os.urandom(20_000), "sub/b.bin": os.urandom(9 << 20), "empty": b""}
    for key, body in files.items():
        azure_env.put(c, f"ds/{key}", body)
    cli("log", "p/dl", f"az://{c}/ds/")
    cli("download", "p/dl", str(tmp_path / "out"), "--no-cache", "-q")
    assert {k: (tmp_path / "out" / k).read_bytes() for k in files} == files
    assert "3 of 3 references resolve" in cli("verify", "p/dl", "-q").out
    azure_env.put(c, "ds/a.bin", b"overwritten")  # no versions in Azurite: If-Match is what catches it
    result = cli("verify", "p/dl", "-q", ok=False)
    assert "2 of 3" in result.out and f"az://{c}/ds/a.bin" in result.err and result.code == 4


def test_mount_reads_exact_bytes_and_fails_on_overwrite(azure_env: AzureEnv, cli: Cli, mount_factory: Any) -> None:
    c = azure_env.container()
    big = os.urandom((9 << 20) + 123)  # more than one 8 MiB block
    azure_env.put(c, "ds/big.bin", big)
    azure_env.put(c, "ds/a.bin", b"logged bytes")
    cli("log", "p/blobs", f"az://{c}/ds/")
    m = mount_factory()
    assert (m.path / "p/blobs/v0/big.bin").read_bytes() == big
    azure_env.put(c, "ds/a.bin", b"NEW BYTES!!!")  # same size, other bytes
    with pytest.raises(OSError) as info:
        (m.path / "p/blobs/v0/a.bin").read_bytes()
    assert info.value.errno == errno.EIO and "If-Match failed" in m.log()
