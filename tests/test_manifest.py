import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from refmount.errors import InvalidInput
from refmount.manifest import CONTENT_MD5, MAX_SIZE, Entry, Manifest, validate_path, validate_reference_name
from refmount.names import ArtifactRef, validate_alias, validate_name, version_index
from refmount.uri import parse_ref


def entry(path: str, digest: str = "d", **kw) -> Entry:
    return Entry(path=path, ref=f"s3://b/{path}", digest=digest, **kw)


def test_artifact_digest_is_wandb_formula() -> None:
    manifest = Manifest([entry("b.txt", "2"), entry("a/x.bin", "1")])
    expected = hashlib.md5(b"wandb-artifact-manifest-v1\na/x.bin:1\nb.txt:2\n").hexdigest()
    assert manifest.digest == expected
    assert Manifest([]).digest == hashlib.md5(b"wandb-artifact-manifest-v1\n").hexdigest()


def test_digest_ignores_refs_and_sizes_but_content_id_does_not() -> None:
    a = Manifest([Entry("x", "s3://one/x", "etag", 1)])
    b = Manifest([Entry("x", "s3://two/x", "etag", 2)])
    assert a.digest == b.digest
    assert a.content_id != b.content_id


def test_json_round_trip_matches_wandb_layout() -> None:
    manifest = Manifest([entry("t/1.png", "e1", size=8, extra={"etag": "e1", "versionID": "v9"}), entry("z", "e2")])
    data = manifest.to_json()
    assert data["version"] == 1
    assert data["storagePolicy"] == "wandb-storage-policy-v1"
    assert data["storagePolicyConfig"] == {"storageLayout": "V2"}
    assert data["contents"]["t/1.png"] == {"digest": "e1", "ref": "s3://b/t/1.png", "size": 8,
                                           "extra": {"etag": "e1", "versionID": "v9"}}  # fmt: skip
    again = Manifest.loads(json.dumps(data))
    assert again.digest == manifest.digest and again.content_id == manifest.content_id


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a/../b", "..", "./a", "a//b", "a/", "nul\x00byte", "new\nline", "x" * 256, "/".join(["d"] * 2049)],
)
def test_hostile_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput):
        validate_path(path)
    with pytest.raises(InvalidInput):
        Manifest.loads(json.dumps({"version": 1, "contents": {path: {"digest": "d", "ref": "s3://b/k"}}}))


def test_duplicate_and_clashing_paths_are_refused() -> None:
    with pytest.raises(InvalidInput, match="duplicate"):
        Manifest([entry("a"), entry("a")])
    with pytest.raises(InvalidInput, match="both a file and the directory"):
        Manifest([entry("a"), entry("a/b")])
    text = (
        '{"version": 1, "contents": {"a": {"digest": "1", "ref": "s3://b/a"}, "a": {"digest": "2", "ref": "s3://b/a"}}}'
    )
    with pytest.raises(InvalidInput, match="duplicate key"):
        Manifest.loads(text)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"version": 2, "contents": {}},
        {"version": 1, "storagePolicy": "other", "contents": {}},
        {"version": 1},
        {"version": 1, "contents": {"a": {"ref": "s3://b/a"}}},
        {"version": 1, "contents": {"a": {"digest": "x"}}},
        {"version": 1, "contents": {"a": {"digest": "x", "ref": "s3://b/a", "size": -1}}},
        {"version": 1, "contents": {"a": {"digest": "x", "ref": "s3://b/a", "extra": []}}},
    ],
)
def test_malformed_manifests_are_refused(data: object) -> None:
    with pytest.raises(InvalidInput):
        Manifest.from_json(data)


def test_checksum_false_entries_are_locations() -> None:
    assert not Entry("d", "s3://b/d/", "s3://b/d/").is_snapshot
    assert entry("d").is_snapshot


MD5 = base64.b64encode(hashlib.md5(b"bytes").digest()).decode()
URL = "http://host/config.json"
BLOB = "https://acct.blob.core.windows.net/c/k"


@pytest.mark.parametrize(
    "ref, digest, extra, pinned",
    [
        ("s3://b/k", "etag", {"etag": "etag"}, True),
        ("s3://b/k", "etag", {}, True),  # the digest is the ETag, sent as If-Match
        ("s3://b/k", "s3://b/k", {"versionID": "v1"}, True),  # an object version alone pins too
        ("s3://b/k", "s3://b/k", {"versionID": "null"}, False),  # written while versioning was off
        ("s3://b/k", "s3://b/k", {}, False),  # checksum=False
        ("gs://b/k", "CJj=", {"etag": "CJj=", "versionID": 17}, True),
        ("gs://b/k", "gs://b/k", {"versionID": 17}, True),  # the generation
        ("gs://b/k", "gs://b/k", {}, False),
        ("az://c/k", "0x8D", {"etag": "0x8D"}, True),
        (BLOB, "0x8D", {}, True),  # an Azure Blob URL is Azure's, not a web server's
        ("az://c/k", "az://c/k", {"versionID": "v"}, False),  # reads use a version only with an ETag
        (BLOB, BLOB, {}, False),
        (URL, "abc", {"etag": '"abc"'}, True),
        (URL, 'W/"abc', {"etag": 'W/"abc"'}, True),
        (URL, URL, {CONTENT_MD5: MD5}, True),  # refmount's entry of a file without an ETag
        (URL, URL, {}, False),  # W&B's entry of a file without an ETag (or checksum=False)
        (URL, URL, {CONTENT_MD5: "not an md5"}, False),
        (URL, MD5, {}, True),  # refmount's digest for such files before it took W&B's
        (URL, "abc", {}, False),  # an ETag digest that lost its extra: nothing says what it is
        (URL.replace("http", "https"), "https://h/x", {"etag": "x"}, True),
        ("file:///d/a.txt", MD5, {"mtime_ns": 1}, True),
        ("file:///d/a.txt", "file:///d/a.txt", {}, False),
        ("file:///d/a.txt", "abc", {}, False),
        ("file:///d/a%20b.txt", base64.b64encode(hashlib.md5(b"file:///d/a%20b.txt").digest()).decode(), {}, False),
        ("ftp://h/x", "abc", {"etag": "abc"}, False),  # no store: nothing reads it
    ],
)
def test_pinned(ref: str, digest: str, extra: dict[str, Any], pinned: bool) -> None:
    e = Entry("p", ref, digest, size=5, extra=extra)
    assert e.pinned is pinned
    assert Entry("p", ref, ref).pinned is False  # checksum=False entries, in every scheme


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"etag": 5}, "invalid extra.etag 5"),
        ({"etag": ""}, "invalid extra.etag ''"),
        ({CONTENT_MD5: "abc"}, "invalid extra.content_md5 'abc'"),
        ({CONTENT_MD5: base64.b64encode(b"x" * 17).decode()}, "expected the base64 MD5 of the content"),
    ],
)
def test_malformed_pins_are_refused(extra: dict[str, Any], message: str) -> None:
    data = {"version": 1, "contents": {"a": {"digest": URL, "ref": URL, "size": 1, "extra": extra}}}
    with pytest.raises(InvalidInput, match=re.escape(message)):
        Manifest.from_json(data)


@pytest.mark.parametrize(
    "uri, message",
    [
        ("", "empty"),
        ("bucket/key", "not a URI"),
        ("ftp://host/x", "unknown scheme"),
        ("s3://user:secret@bucket/key", "embeds credentials"),
        ("s3://bucket/key?X-Amz-Signature=abc&X-Amz-Credential=x", "signed URL"),
        ("s3://bucket/key?sig=abc", "signed URL"),
        ("s3://bucket/key#frag", "fragment"),
        ("s3://bucket/k\x00ey", "NUL"),
    ],
)
def test_bad_uris_are_refused(uri: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        parse_ref(uri, known_schemes={"s3", "file"})
    assert "secret" not in str(info.value) or "never stores secrets" in str(info.value)


def test_uri_parts() -> None:
    ref = parse_ref("s3://bucket/a%20b/c?versionId=42", known_schemes={"s3"})
    assert (ref.scheme, ref.netloc, ref.path, ref.query_value("versionId")) == ("s3", "bucket", "a%20b/c", "42")
    assert parse_ref(ref.raw, quoted=True).path == "a b/c"  # a ref marked as encoded (QUOTED_REF)
    assert parse_ref("file:///d/a%20b").path == "d/a b"  # file:// refs always are, as W&B reads them


def test_names_and_refs() -> None:
    assert validate_name("project", "vision-2.0_x") == "vision-2.0_x"
    for bad in ["", "-x", "a/b", "a:b", "a b", "é", "x" * 129]:
        with pytest.raises(InvalidInput):
            validate_name("project", bad)
    for reserved in ["latest", "v0", "v12"]:
        with pytest.raises(InvalidInput, match="reserved"):
            validate_alias(reserved)
    assert validate_alias("v1x") == "v1x"
    assert version_index("v10") == 10 and version_index("v01") is None and version_index("best") is None
    assert ArtifactRef.parse("vision/mnist") == ArtifactRef("vision", "mnist", "latest")
    assert ArtifactRef.parse("vision/mnist:v3").label == "v3"
    for bad in ["vision", "vision/mnist:", "vision/mn/ist", "vision/mnist:a b"]:
        with pytest.raises(InvalidInput):
            ArtifactRef.parse(bad)


def test_sizes_must_fit_a_signed_64_bit_integer() -> None:
    def contents(**sizes: int) -> dict[str, object]:
        return {
            "version": 1,
            "contents": {p: {"digest": "d", "ref": f"s3://b/{p}", "size": n} for p, n in sizes.items()},
        }

    assert Manifest.from_json(contents(a=MAX_SIZE)).total_size == 2**63 - 1
    for size in (2**63, 10**30, -1):
        with pytest.raises(InvalidInput, match=rf"^manifest entry 'a' has an invalid size {size} \(expected 0 to "):
            Manifest.from_json(contents(a=size))
    with pytest.raises(InvalidInput, match="manifest entry 'b' makes the total size exceed"):
        Manifest.from_json(contents(a=2**62, b=2**62))
    with pytest.raises(InvalidInput, match="invalid size"):
        Manifest([entry("a", size=2**64)])  # entries made in Python are checked too


def test_reference_names_are_relative_artifact_paths(tmp_path: Path) -> None:
    import refmount

    assert validate_reference_name("a/b") == "a/b" and validate_reference_name("train/") == "train"
    for bad in ["/abs", "../x", "a//b", "a/./b", "", "/", "nul\x00", "x//"]:
        with pytest.raises(InvalidInput, match=rf"^invalid --name {re.escape(repr(bad))}: artifact path"):
            validate_reference_name(bad, "--name")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InvalidInput, match=r"^invalid name '/abs': artifact path '/abs' is absolute"):
        refmount.Artifact("a").add_reference(tmp_path.as_uri(), "/abs")
