"""s3:// references against a real moto_server: listing, pinning, failures, request counts."""

from __future__ import annotations

import collections
import http.server
import logging
import os
import threading
import time
from collections.abc import Iterator

import pytest

import refmount
import refmount.stores
from refmount.errors import ChangedObject, InvalidInput, InvalidKey, NotFound, StoreError
from refmount.manifest import Entry, Manifest
from refmount.stores import parse, store_for
from refmount.stores.base import MAX_ATTEMPTS
from refmount.stores.s3 import S3Store
from tests.servers import S3Env, point_env_at


def scan(uri: str, **kw) -> list[Entry]:
    return list(store_for("s3").scan(parse(uri), **kw))


def by_path(uri: str, **kw) -> dict[str, Entry]:
    return {e.path: e for e in scan(uri, **kw)}


@pytest.fixture
def store(s3_env: S3Env) -> S3Store:
    s = store_for("s3")
    assert isinstance(s, S3Store)
    return s


@pytest.fixture
def requests(store: S3Store) -> Iterator[collections.Counter[str]]:
    """Counts S3 operations the store sends (a botocore hook on its real client)."""
    counts: collections.Counter[str] = collections.Counter()

    def count(model, **_: object) -> None:
        counts[model.name] += 1

    store.client.meta.events.register("before-call.s3", count)
    yield counts
    store.client.meta.events.unregister("before-call.s3", count)


@pytest.mark.parametrize("versioned", [False, True])
def test_prefix_scan(s3_env: S3Env, versioned: bool) -> None:
    b = s3_env.bucket(versioned=versioned)
    for key, body in {"data/a.txt": b"a", "data/sub/deep/b.bin": b"bb", "data/empty": b"", "data/folder/": b"",
                      "data2/x": b"sibling", "other": b"o"}.items():  # fmt: skip
        s3_env.put(b, key, body)
    put = s3_env.put(b, "data/a.txt", b"a2")  # overwritten: the latest version is what gets logged
    for uri in (f"s3://{b}/data", f"s3://{b}/data/"):
        entries = by_path(uri)
        assert set(entries) == {"a.txt", "sub/deep/b.bin", "empty"}  # no folder marker, no data2/
    a = entries["a.txt"]
    assert a.digest == put["ETag"].strip('"') == a.etag and a.size == 2 and a.ref == f"s3://{b}/data/a.txt"
    assert (a.version_id == put["VersionId"]) if versioned else a.version_id is None
    assert entries["empty"].size == 0
    assert set(by_path(f"s3://{b}")) == {"data/a.txt", "data/sub/deep/b.bin", "data/empty", "data2/x", "other"}
    assert set(by_path(f"s3://{b}/data", name="imgs")) == {"imgs/a.txt", "imgs/sub/deep/b.bin", "imgs/empty"}


def test_single_object_and_pinned_version(s3_env: S3Env) -> None:
    b = s3_env.bucket(versioned=True)
    first = s3_env.put(b, "models/cnn/model.h5", b"weights-1")
    s3_env.put(b, "models/cnn/model.h5", b"weights-two")
    (latest,) = scan(f"s3://{b}/models/cnn/model.h5")
    assert latest.path == "model.h5" and latest.size == len(b"weights-two")
    (old,) = scan(f"s3://{b}/models/cnn/model.h5?versionId={first['VersionId']}", name="ckpt/old.h5")
    assert old.path == "ckpt/old.h5" and old.size == 9 and old.digest == first["ETag"].strip('"')
    assert old.version_id == first["VersionId"] and old.ref == f"s3://{b}/models/cnn/model.h5"
    assert store_for("s3").read(old, 0, 100) == b"weights-1"


def test_object_wins_over_directory_of_same_name(s3_env: S3Env) -> None:
    b = s3_env.bucket()
    s3_env.put(b, "data", b"file")
    s3_env.put(b, "data/child", b"child")
    (only,) = scan(f"s3://{b}/data")
    assert only.path == "data" and only.size == 4
    assert set(by_path(f"s3://{b}/data/")) == {"child"}


def test_multipart_etag(s3_env: S3Env) -> None:
    b = s3_env.bucket()
    part = b"x" * (5 << 20)
    upload = s3_env.client.create_multipart_upload(Bucket=b, Key="big.bin")
    parts = [{"PartNumber": n, "ETag": s3_env.client.upload_part(Bucket=b, Key="big.bin", PartNumber=n, Body=part,
              UploadId=upload["UploadId"])["ETag"]} for n in (1, 2)]  # fmt: skip
    s3_env.client.complete_multipart_upload(Bucket=b, Key="big.bin", UploadId=upload["UploadId"],
                                            MultipartUpload={"Parts": parts})  # fmt: skip
    (entry,) = scan(f"s3://{b}/big.bin")
    assert entry.digest.endswith("-2") and entry.size == 10 << 20
    assert store_for("s3").read(entry, (5 << 20) - 2, 4) == b"xxxx"


def test_reads_are_pinned_to_the_version(s3_env: S3Env, store: S3Store) -> None:
    versioned, plain = s3_env.bucket(versioned=True), s3_env.bucket()
    body = bytes(range(256)) * 40
    for b in (versioned, plain):
        s3_env.put(b, "k", body)
    pinned, unpinned = scan(f"s3://{versioned}/k")[0], scan(f"s3://{plain}/k")[0]
    for b in (versioned, plain):
        s3_env.put(b, "k", b"overwritten")
    assert store.read(pinned, 0, 10) == body[:10]  # the logged version, still there
    store.check(pinned)
    with pytest.raises(ChangedObject, match="overwritten") as info:
        store.read(unpinned, 0, 10)
    assert unpinned.ref in str(info.value)
    with pytest.raises(ChangedObject):
        store.check(unpinned)
    s3_env.client.delete_object(Bucket=plain, Key="k")
    with pytest.raises(ChangedObject, match="deleted"):
        store.read(unpinned, 0, 10)


def test_reads_are_native_and_pinned_and_odd_keys_take_botocore(
    s3_env: S3Env, store: S3Store, requests: collections.Counter[str]
) -> None:
    """Reads go through obstore with the same pins (no botocore GetObject); a key obstore cannot express
    (an empty path segment) is read through botocore, pinned all the same."""
    versioned, plain = s3_env.bucket(versioned=True), s3_env.bucket()
    for b in (versioned, plain):
        s3_env.put(b, "k", b"logged bytes")
        s3_env.put(b, "odd//key", b"logged bytes")
    pinned, unpinned = scan(f"s3://{versioned}/k")[0], scan(f"s3://{plain}/k")[0]
    assert store.read(pinned, 7, 5) == b"bytes" and store.read(unpinned, 0, 6) == b"logged"
    assert requests["GetObject"] == 0
    for b in (versioned, plain):
        s3_env.put(b, "k", b"other bytes!")
    assert store.read(pinned, 0, 12) == b"logged bytes"  # the logged version, not the latest
    with pytest.raises(ChangedObject, match="overwritten"):
        store.read(unpinned, 0, 6)  # If-Match reached the server
    assert requests["GetObject"] == 0
    odd = Entry("odd", f"s3://{plain}/odd//key", pinned.digest, 12, {"etag": pinned.digest})
    assert store.read(odd, 0, 12) == b"logged bytes" and requests["GetObject"] == 1
    s3_env.put(plain, "odd//key", b"other bytes!")
    with pytest.raises(ChangedObject, match="overwritten"):
        store.read(odd, 0, 12)


def test_outside_the_checked_botocore_versions_reads_take_the_public_route(
    s3_env: S3Env, store: S3Store, requests: collections.Counter[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from refmount import compat

    monkeypatch.setitem(compat.CHECKED, "botocore", ("0", "1"))
    compat.checked.cache_clear()
    try:
        b = s3_env.bucket()
        s3_env.put(b, "odd//k", b"logged bytes")  # a key only botocore reads
        (entry,) = scan(f"s3://{b}/odd//k")
        assert store.read(entry, 7, 5) == b"bytes" and requests["GetObject"] == 1  # body read without internals
        targets = [memoryview(bytearray(6)), memoryview(bytearray(6))]
        assert store.read_into(entry, 0, targets) == 12 and b"".join(map(bytes, targets)) == b"logged bytes"
        s3_env.put(b, "odd//k", b"other bytes!")
        with pytest.raises(ChangedObject, match="overwritten"):
            store.read(entry, 0, 6)  # pinned all the same
    finally:
        compat.checked.cache_clear()


def test_deleted_version_is_an_error_not_other_bytes(s3_env: S3Env, store: S3Store) -> None:
    b = s3_env.bucket(versioned=True)
    s3_env.put(b, "k", b"one")
    (entry,) = scan(f"s3://{b}/k")
    s3_env.put(b, "k", b"two")
    s3_env.client.delete_object(Bucket=b, Key="k", VersionId=entry.version_id)
    with pytest.raises(ChangedObject):
        store.read(entry, 0, 3)


def test_checksum_false_and_limits(s3_env: S3Env) -> None:
    b = s3_env.bucket()
    for i in range(5):
        s3_env.put(b, f"p/{i}", b"x")
    (loc,) = scan(f"s3://{b}/p/", checksum=False)
    assert loc.digest == loc.ref == f"s3://{b}/p/" and loc.path == "p"
    assert len(scan(f"s3://{b}/p/", max_objects=5)) == 5


def test_errors_are_clear(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    b = s3_env.bucket()
    s3_env.put(b, "x", b"x")
    s3_env.put(b, "bad//key", b"x")
    with pytest.raises(NotFound, match="no objects under"):
        scan(f"s3://{b}/missing/")
    with pytest.raises(NotFound):
        scan(f"s3://{b}/x?versionId=nope")
    # a key that cannot be a path does not stop the listing: the selection above the stores refuses or skips it
    assert [e.path for e in scan(f"s3://{b}/bad/")] == ["/key"]
    with pytest.raises(InvalidKey, match=r"object '/key' under s3://.*/bad/ cannot be a file path: it is absolute"):
        refmount.Artifact("a").add_reference(f"s3://{b}/bad/", on_invalid="error")
    with pytest.raises(InvalidInput, match="unsupported query parameter"):
        scan(f"s3://{b}/x?partNumber=1")
    with pytest.raises(InvalidInput, match="no bucket"):
        scan("s3:///x")
    with pytest.raises(InvalidInput, match="versionId needs an object key"):
        scan(f"s3://{b}?versionId=abc")
    (entry,) = scan(f"s3://{b}/x")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(StoreError, match=r"cannot set up the S3 client: .*no-such-profile"):
        store_for("s3").read(entry, 0, 1)
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("AWS_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        scan(f"s3://{b}/x")


def test_listing_makes_one_request_per_thousand_objects(s3_env: S3Env, store: S3Store,
                                                        requests: collections.Counter[str]) -> None:  # fmt: skip
    b = s3_env.bucket()
    keys = [f"many/{i:05}" for i in range(2500)]
    for key in keys:
        s3_env.client.put_object(Bucket=b, Key=key, Body=b"")
    requests.clear()
    manifest = Manifest(scan(f"s3://{b}/many/"))
    assert len(manifest) == 2500
    assert requests == {"GetBucketVersioning": 1, "ListObjectsV2": 3}


@pytest.mark.parametrize("versioned", [False, True])
def test_odd_keys_make_refs_that_read_the_right_object(s3_env: S3Env, store: S3Store, versioned: bool) -> None:
    """A key goes into its ref as it is, as W&B writes it ('%' and non-ASCII included), unless it holds '?' or
    '#', which would end a ref's path: then the ref is percent-encoded and marked so. Each reads its object."""
    b = s3_env.bucket(versioned=versioned)
    s3_env.put(b, "odd/aA", b"the wrong object")  # what a decoded '%41' would name
    s3_env.put(b, "odd/a%41 é.txt", b"the plain object")
    s3_env.put(b, "odd/a%41?x=1#2 é.txt", b"the right object")
    found = {e.path: e for e in scan(f"s3://{b}/odd/")}
    plain, cut = found["a%41 é.txt"], found["a%41?x=1#2 é.txt"]
    assert plain.ref == f"s3://{b}/odd/a%41 é.txt" and not plain.ref_quoted
    assert cut.ref == f"s3://{b}/odd/a%2541%3Fx=1%232 %C3%A9.txt" and cut.ref_quoted
    assert store.read(plain, 4, 5) == b"plain" and store.read(cut, 4, 5) == b"right"
    (single,) = scan(plain.ref)  # the ref, as a user would give it, names the single object again
    assert single.ref == plain.ref and single.digest == plain.digest


def test_read_into_fills_every_target_and_reuses_the_connection(s3_env: S3Env, store: S3Store,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    b = s3_env.bucket()
    body = os.urandom(3 << 20)
    s3_env.put(b, "big", body)
    (entry,) = scan(f"s3://{b}/big")
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")
    for offset in (0, 12345, 1 << 20):
        targets = [memoryview(bytearray(n)) for n in (1000, 1 << 20, 77)]
        assert store.read_into(entry, offset, targets) == sum(len(t) for t in targets)
        assert b"".join(bytes(t) for t in targets) == body[offset : offset + sum(len(t) for t in targets)]
    whole = [memoryview(bytearray(len(body)))]
    assert store.read_into(entry, 0, whole) == len(body) and bytes(whole[0]) == body  # a GET without a Range
    assert sum("Starting new HTTP connection" in r.message for r in caplog.records) <= 1  # each read released it


class _ScriptedS3(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``BODY`` the way the next entry of ``script`` says: in full, cut short (and the
    connection closed), with more bytes than asked for, or not at all ("silent")."""

    BODY = bytes(range(256)) * 64
    script: list[str] = []

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        how = self.script.pop(0) if self.script else "full"
        if how == "silent":  # a server that takes the request and never answers
            time.sleep(1)
            self.close_connection = True
            return
        sent = self.BODY + b"extra" if how == "long" else self.BODY
        self.send_response(200)
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        self.wfile.write(sent[: len(sent) // 2] if how == "short" else sent)
        self.close_connection = how == "short"

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    point_env_at(monkeypatch, f"http://127.0.0.1:{server.server_address[1]}")
    _ScriptedS3.script, _ScriptedS3.requests = [], 0
    yield _ScriptedS3.script
    server.shutdown()


def test_a_body_cut_short_is_fetched_again_and_a_long_one_is_counted(scripted_s3: list[str]) -> None:
    body = _ScriptedS3.BODY
    entry = Entry(path="k", ref="s3://b/k", digest="d", size=len(body), extra={"etag": "d"})
    store = store_for("s3")
    scripted_s3[:] = ["short", "full"]
    targets = [memoryview(bytearray(1000)), memoryview(bytearray(len(body) - 1000))]
    assert store.read_into(entry, 0, targets) == len(body)
    assert b"".join(bytes(t) for t in targets) == body and not scripted_s3
    scripted_s3[:] = ["long"]
    assert store.read_into(entry, 0, [memoryview(bytearray(len(body)))]) == len(body) + len(b"extra")
    scripted_s3[:] = ["short"] * MAX_ATTEMPTS
    with pytest.raises(StoreError, match=f"giving up after {MAX_ATTEMPTS} attempts"):
        store.read_into(entry, 0, [memoryview(bytearray(len(body)))])
